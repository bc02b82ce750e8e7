"""Central's store: SQLAlchemy models, the engine and session factory, and store functions.

Store functions take a ``Session`` that the caller opened; the caller owns the transaction.
The schema is created and changed only by the Alembic migrations in ``central.migrations``.
"""
