"""REST routes under /api."""
