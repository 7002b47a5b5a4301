"""Sentinel Backup: PostgreSQL backup and restore that proves its backups."""

__version__ = "0.1.0"
