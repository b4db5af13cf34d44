"""The OpenAPI document as the API really answers.

FastAPI documents every 422 as its own validation error (`detail`: an array of field errors),
but our handlers also answer 422 with a plain message (`{"detail": "cursor is not valid"}`,
docs/admin-api.md "Errors"). The document says so: 422 `detail` is a string or that array.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_DETAIL = {
    "title": "Detail",
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
    ],
}


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` describe 422 bodies whose detail is a message, too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if error is not None:
            error["properties"]["detail"] = _DETAIL
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
