"""The continuous WAL archive: wal-push, wal-fetch, the asynchronous spool, wal-receive, archive checks."""
