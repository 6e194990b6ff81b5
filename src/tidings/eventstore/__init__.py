"""Event sourcing: a durable event store (memory, SQLite, PostgreSQL), aggregates, snapshots, projections.

The store's port and value types are in :mod:`tidings.eventstore.base`; each backend is one module.
"""
