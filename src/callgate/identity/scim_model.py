"""SCIM 2.0 resources as callgate serves them (RFC 7643), with scim2-models: the User (with the
enterprise extension) and Group models, the discovery documents (RFC 7644 §4), and what an
account takes from a User.

callgate keeps every attribute of the core User and enterprise schemas it is sent (and returns
it), and acts on these: `userName` gives the handle at creation, `displayName` (else
`name.formatted`, else given and family name) the display name, the primary (else first) e-mail
the e-mail, `active` whether the account may sign in; group membership gives callgate groups and
role through `[identity.scim]` group_map / role_map. An attribute outside these schemas is refused
(400 invalidSyntax naming it). `password` is refused: these accounts sign in with single sign-on.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    InvalidValueException,
    Patch,
    ResourceType,
    Schema,
    SCIMException,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models import Error as ScimError

ScimUser = User[EnterpriseUser]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MEDIA_TYPE = "application/scim+json"  # RFC 7644 §3.1


class Invalid(SCIMException):
    """A payload that does not validate: 400 with scim2-models' precise message."""

    status = 400

    def __init__(self, error: ScimError) -> None:
        super().__init__(detail=error.detail)
        self._error = error


def parse(model: Any, payload: Any, context: Context) -> Any:
    """`payload` as `model` in `context` (RFC 7644 §3.2); Invalid naming the first problem."""
    if not isinstance(payload, dict):
        raise Invalid(ScimError(status=400, scim_type="invalidSyntax", detail="not a JSON object"))
    try:
        return model.model_validate(payload, scim_ctx=context)
    except ValidationError as exc:
        raise Invalid(ScimError.from_validation_errors(exc)[0]) from None


def refuse_password(user: Any) -> None:
    if user.password is not None:
        raise InvalidValueException(
            detail="password is not accepted: accounts provisioned over SCIM sign in with "
            "single sign-on and have no password here"
        )


def display_name_of(user: Any, fallback: str) -> str:
    """displayName, else name.formatted, else "given family", else `fallback`."""
    name = user.name
    candidates = [user.display_name]
    if name is not None:
        candidates.append(name.formatted)
        candidates.append(" ".join(p for p in (name.given_name, name.family_name) if p))
    for candidate in candidates:
        if candidate and candidate.strip() and candidate.isprintable():
            return str(candidate).strip()[:255]
    return fallback


def email_of(user: Any) -> str | None:
    """The primary e-mail, else the first one (RFC 7643 §4.1.2)."""
    emails = [e for e in user.emails or [] if e.value]
    primary = [e for e in emails if e.primary]
    chosen = (primary or emails or [None])[0]
    return str(chosen.value)[:320] if chosen is not None else None


def service_provider_config(max_results: int) -> dict[str, Any]:
    """RFC 7643 §5: PATCH and filters yes; bulk, sort, ETags and password changes no."""
    config = ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer token",
                description="The token of [identity.scim] in an Authorization: Bearer header",
                primary=True,
            )
        ],
    )
    return _dump(config)


def resource_types(base_url: str) -> list[dict[str, Any]]:
    found = []
    for model in (ScimUser, Group):
        resource_type = ResourceType.from_resource(model)
        document = _dump(resource_type)
        document["meta"] = {
            "resourceType": "ResourceType",
            "location": f"{base_url}/ResourceTypes/{resource_type.id}",
        }
        found.append(document)
    return found


def schemas(base_url: str) -> list[dict[str, Any]]:
    """The schemas as served: the User's without `password`, which is refused here."""
    found = []
    for schema in (ScimUser.to_schema(), EnterpriseUser.to_schema(), Group.to_schema()):
        if schema.id == USER_SCHEMA:
            kept = [a for a in schema.attributes or [] if a.name != "password"]
            schema = schema.model_copy(update={"attributes": kept})
        document = _dump(schema)
        document["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema.id}"}
        found.append(document)
    return found


def _dump(model: ServiceProviderConfig | ResourceType | Schema) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return dumped
