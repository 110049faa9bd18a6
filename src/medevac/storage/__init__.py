"""Persistence: SQLAlchemy 2 models, Alembic migrations, SQLite by default or PostgreSQL."""

from medevac.storage.db import Database, StorageError, WriterBusy
from medevac.storage.models import AuditEvent, Base, HostRecord

__all__ = ["AuditEvent", "Base", "Database", "HostRecord", "StorageError", "WriterBusy"]
