"""The HTTP layer (FastAPI): `app.create_app` (health, metrics, the REST API under routes/, the
browser pages), the `/ws` signaling endpoint (`ws.py`), schemas and request dependencies."""
