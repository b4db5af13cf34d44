"""HTTP application (FastAPI): health, metrics; the REST API later."""
