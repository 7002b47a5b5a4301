from sentinel_backup.cli import main

raise SystemExit(main())
