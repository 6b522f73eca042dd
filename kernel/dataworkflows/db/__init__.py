"""Persistence: models, the database handle and migrations."""
