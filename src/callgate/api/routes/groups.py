"""Groups: /api/groups (admin writes; admin and compliance read). docs/policy.md.

    GET    /api/groups                         every group with its members
    POST   /api/groups                         {name, description?, turn_*?} → 201
    GET    /api/groups/{name}
    PATCH  /api/groups/{name}                  {description?, turn_max_allocations?, …}
    DELETE /api/groups/{name}                  → 204; 409 while a rule names it
    PUT    /api/groups/{name}/members/{handle} → the group; 409 if already a member
    DELETE /api/groups/{name}/members/{handle} → the group; 409 if not a member

Every change is audited (group.create|update|delete|member_add|member_remove) with the acting
admin's handle, in the same transaction as the change.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from callgate.accounts.handles import normal_handle
from callgate.api.deps import AdminDep, ReaderDep, ServicesDep
from callgate.api.schemas_policy import GroupIn, GroupOut, GroupPatch, GroupsOut
from callgate.policy.errors import InvalidPolicyValue, PolicyConflict
from callgate.policy.groups import GroupStore, GroupView
from callgate.policy.specs import GroupSpec

router = APIRouter(prefix="/api/groups", tags=["groups"])


def policy_refused(_request: Request, exc: Exception) -> JSONResponse:
    """The HTTP answer to a refused policy or group change (an exception handler of the app):
    422 invalid value, 409 conflict, 404 unknown group, user or rule."""
    if isinstance(exc, InvalidPolicyValue):
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    elif isinstance(exc, PolicyConflict):
        code = status.HTTP_409_CONFLICT
    else:
        code = status.HTTP_404_NOT_FOUND
    return JSONResponse({"detail": str(exc)}, status_code=code)


def _groups(services: ServicesDep) -> GroupStore:
    if services.groups is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="groups are not available")
    return services.groups


def _out(view: GroupView) -> GroupOut:
    return GroupOut.model_validate(view.as_json())


@router.get("")
def list_groups(reader: ReaderDep, services: ServicesDep) -> GroupsOut:
    return GroupsOut(groups=[_out(view) for view in _groups(services).list_groups()])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_group(body: GroupIn, admin: AdminDep, services: ServicesDep) -> GroupOut:
    groups = _groups(services)
    return _out(groups.create(admin.handle, GroupSpec.parse(body.model_dump())))


@router.get("/{name}")
def get_group(name: str, reader: ReaderDep, services: ServicesDep) -> GroupOut:
    groups = _groups(services)
    return _out(groups.get(name))


@router.patch("/{name}")
def update_group(name: str, body: GroupPatch, admin: AdminDep, services: ServicesDep) -> GroupOut:
    groups = _groups(services)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("description", "") is None:
        changes["description"] = ""
    if "turn_peer_ranges" in changes and changes["turn_peer_ranges"] is None:
        changes["turn_peer_ranges"] = []
    return _out(groups.update(admin.handle, name, changes))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(name: str, admin: AdminDep, services: ServicesDep) -> Response:
    groups = _groups(services)
    groups.delete(admin.handle, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{name}/members/{handle}")
def add_member(name: str, handle: str, admin: AdminDep, services: ServicesDep) -> GroupOut:
    groups = _groups(services)
    return _out(groups.add_member(admin.handle, name, normal_handle(handle)))


@router.delete("/{name}/members/{handle}")
def remove_member(name: str, handle: str, admin: AdminDep, services: ServicesDep) -> GroupOut:
    groups = _groups(services)
    return _out(groups.remove_member(admin.handle, name, normal_handle(handle)))
