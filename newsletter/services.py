"""Embedded services (filled in by the delivery engineer)."""
