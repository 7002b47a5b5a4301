"""Physical backups: pg_basebackup base backups, their facts, and restores with point-in-time recovery."""
