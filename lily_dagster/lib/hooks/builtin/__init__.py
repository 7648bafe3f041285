"""Lily's built-in hooks; each module registers its hooks on import."""
