"""Administration: users, system statistics, secrets and configuration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from llm_orchestrator import __version__
from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.admin import CreateUserRequest, UserList, UserPublic
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.system import (
    Features,
    SetSecretRequest,
    SetSecretResponse,
    SystemConfig,
    SystemStatsPublic,
)
from llm_orchestrator.api.schemas.usage import (
    BudgetPublic,
    BudgetUpdate,
    PricingPublic,
    PricingUpdate,
)
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import FieldError, ValidationFailed

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)
Admin = Annotated[Principal, Depends(require(Permission.ADMIN_ACCESS))]


@router.get("/users", response_model=UserList)
async def list_users(runtime: RuntimeDep, _: Admin, page: Page) -> UserList:
    users, total = await runtime.user_admin.list_users(limit=page.limit, offset=page.offset)
    return UserList(
        users=[UserPublic.of(u) for u in users], total=total, limit=page.limit, offset=page.offset
    )


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def create_user(
    body: CreateUserRequest, audit: AuditDep, runtime: RuntimeDep, _: Admin
) -> UserPublic:
    user = await runtime.user_admin.create_user(
        username=body.username,
        email=str(body.email),
        password=body.password,
        roles=body.roles,
        tier=body.tier,
    )
    await audit(
        "user_management",
        "Create user",
        resource_type="user",
        resource_id=user.id,
        details={"username": user.username, "roles": list(user.roles), "tier": user.tier},
    )
    return UserPublic.of(user)


@router.get("/stats", response_model=SystemStatsPublic)
async def stats(runtime: RuntimeDep, _: Admin) -> SystemStatsPublic:
    return SystemStatsPublic.of(await runtime.system_stats.current())


@router.post("/secrets", response_model=SetSecretResponse)
async def set_secret(
    body: SetSecretRequest, audit: AuditDep, runtime: RuntimeDep, _: Admin
) -> SetSecretResponse:
    await runtime.secrets.put(body.key, body.value.get_secret_value(), ttl=body.ttl)
    # The name and expiry only: the value must never reach the audit trail.
    await audit(
        "secret",
        "Set secret",
        resource_type="secret",
        resource_id=body.key,
        details={"ttl_seconds": body.ttl_seconds, "backend": runtime.secrets.backend},
    )
    return SetSecretResponse(key=body.key)


@router.get("/config", response_model=SystemConfig)
async def config(runtime: RuntimeDep, _: Admin) -> SystemConfig:
    settings = runtime.settings
    return SystemConfig(
        version=__version__,
        environment=settings.environment,
        features=Features(
            # Executions, checkpoints and the audit trail always live in PostgreSQL.
            state_persistence=True,
            audit_logging=True,
            rate_limiting=settings.rate_limits_enabled,
            engine=settings.engine,
            secrets_backend=settings.secrets_backend,
        ),
    )


@router.get("/users/{user_id}/budget", response_model=BudgetPublic)
async def get_budget(user_id: str, runtime: RuntimeDep, _: Admin) -> BudgetPublic:
    """The user's monthly budget (the configured default unless one was set) and spend."""
    return BudgetPublic.of(await runtime.budgets.status(user_id))


@router.put("/users/{user_id}/budget", response_model=BudgetPublic)
async def put_budget(
    user_id: str, body: BudgetUpdate, audit: AuditDep, runtime: RuntimeDep, principal: Admin
) -> BudgetPublic:
    """Set the user's monthly USD budget (null: none); it applies to the next step."""
    status = await runtime.budgets.set(user_id, body.monthly_usd, by=principal.user_id)
    await audit(
        "user_management",
        "Set budget",
        resource_type="user",
        resource_id=user_id,
        details={"monthly_usd": body.monthly_usd},
    )
    return BudgetPublic.of(status)


@router.get("/pricing", response_model=PricingPublic)
async def get_pricing(runtime: RuntimeDep, _: Admin) -> PricingPublic:
    """The price table every provider call is costed with: shipped prices and overrides."""
    return await _pricing(runtime)


@router.put("/pricing", response_model=PricingPublic)
async def put_pricing(
    body: PricingUpdate, audit: AuditDep, runtime: RuntimeDep, principal: Admin
) -> PricingPublic:
    """Replace the overrides; calls made from now on are costed with them."""
    from llm_orchestrator.store.usage import PriceRow

    seen: dict[tuple[str, str], int] = {}
    errors = []
    for index, price in enumerate(body.prices):
        first = seen.setdefault((price.provider, price.model), index)
        if first != index:
            errors.append(
                FieldError(
                    f"prices[{index}]",
                    f"duplicate entry for {price.provider} {price.model!r} (see prices[{first}])",
                )
            )
    if errors:
        raise ValidationFailed("Invalid price table", errors)
    await runtime.usage.replace_price_overrides(
        [
            PriceRow(p.provider, p.model, p.input_usd_per_million, p.output_usd_per_million)
            for p in body.prices
        ],
        updated_by=principal.user_id,
    )
    await audit(
        "configuration",
        "Set price overrides",
        resource_type="pricing",
        details={"overrides": len(body.prices)},
    )
    return await _pricing(runtime)


async def _pricing(runtime: RuntimeDep) -> PricingPublic:
    from llm_orchestrator.usage.pricing import ModelPrice, effective_prices

    rows = await runtime.usage.price_overrides()
    overrides = {
        (r.provider, r.model): ModelPrice(r.input_usd_per_million, r.output_usd_per_million)
        for r in rows
    }
    return PricingPublic.of(
        effective_prices(overrides), {(r.provider, r.model): r.updated_at for r in rows}
    )
