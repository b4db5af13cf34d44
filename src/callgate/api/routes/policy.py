"""Call policy: /api/policy (admin writes; admin and compliance read). docs/policy.md.

    GET    /api/policy                   {default_action, time_zone, version, rules: [Rule]}
    POST   /api/policy/rules             Rule fields (+ position?) → 201 the rule
    GET    /api/policy/rules/{id}
    PUT    /api/policy/rules/{id}        every field again (id and position stay)
    DELETE /api/policy/rules/{id}        → 204
    POST   /api/policy/rules/{id}/move   {position}
    PUT    /api/policy/settings          {default_action?, time_zone?}
    POST   /api/policy/explain           {caller, callee, at?} → decision, rule and the trace

Every change is audited (policy.rule_create|rule_update|rule_delete|rule_move|settings) with the
before and after, in the same transaction. Signaling processes see a change within 0.5 s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from callgate.api.deps import AdminDep, ReaderDep, ServicesDep
from callgate.api.schemas_policy import (
    ExplainIn,
    ExplainOut,
    MoveIn,
    PolicyOut,
    RuleIn,
    RuleOut,
    SettingsIn,
    SettingsOut,
)
from callgate.clock import SystemClock
from callgate.policy.explain import explain
from callgate.policy.specs import RuleSpec, RuleView
from callgate.policy.store import PolicyStore

router = APIRouter(prefix="/api/policy", tags=["policy"])
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _policy(services: ServicesDep) -> PolicyStore:
    if services.policy is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="policy is not available")
    return services.policy


def _out(view: RuleView) -> RuleOut:
    return RuleOut.model_validate(view.as_json())


def _spec(body: RuleIn) -> RuleSpec:
    return RuleSpec.parse(body.model_dump(exclude={"position"}))


@router.get("")
def get_policy(reader: ReaderDep, services: ServicesDep) -> PolicyOut:
    policy = _policy(services)
    settings = policy.settings()
    return PolicyOut(
        default_action=settings.default_action,
        time_zone=settings.time_zone,
        version=settings.version,
        rules=[_out(view) for view in policy.rules()],
    )


@router.post("/rules", status_code=status.HTTP_201_CREATED)
def create_rule(body: RuleIn, admin: AdminDep, services: ServicesDep) -> RuleOut:
    policy = _policy(services)
    return _out(policy.create_rule(admin.handle, _spec(body), body.position))


@router.get("/rules/{rule_id}")
def get_rule(rule_id: RuleId, reader: ReaderDep, services: ServicesDep) -> RuleOut:
    policy = _policy(services)
    return _out(policy.rule(rule_id))


@router.put("/rules/{rule_id}")
def replace_rule(rule_id: RuleId, body: RuleIn, admin: AdminDep, services: ServicesDep) -> RuleOut:
    policy = _policy(services)
    if body.position is not None:
        raise refused_position()
    return _out(policy.update_rule(admin.handle, rule_id, _spec(body)))


def refused_position() -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail="position: use POST /api/policy/rules/{id}/move to reorder",
    )


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(rule_id: RuleId, admin: AdminDep, services: ServicesDep) -> Response:
    policy = _policy(services)
    policy.delete_rule(admin.handle, rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/rules/{rule_id}/move")
def move_rule(rule_id: RuleId, body: MoveIn, admin: AdminDep, services: ServicesDep) -> RuleOut:
    policy = _policy(services)
    return _out(policy.move_rule(admin.handle, rule_id, body.position))


@router.put("/settings")
def put_settings(body: SettingsIn, admin: AdminDep, services: ServicesDep) -> SettingsOut:
    policy = _policy(services)
    settings = policy.set_settings(admin.handle, body.default_action, body.time_zone)
    return SettingsOut(default_action=settings.default_action, time_zone=settings.time_zone)


@router.post("/explain")
def explain_call(body: ExplainIn, reader: ReaderDep, services: ServicesDep) -> ExplainOut:
    policy = _policy(services)
    result = explain(policy, body.caller, body.callee, body.at, SystemClock().wall())
    return ExplainOut.model_validate(result)
