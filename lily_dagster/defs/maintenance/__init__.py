"""Housekeeping of the Dagster instance and Lily's state: run retention."""
