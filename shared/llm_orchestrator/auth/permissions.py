"""Permissions, roles and API-key scopes, and how they map onto each other."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Permission(StrEnum):
    WORKFLOW_READ = "WorkflowRead"
    WORKFLOW_WRITE = "WorkflowWrite"
    WORKFLOW_DELETE = "WorkflowDelete"
    WORKFLOW_EXECUTE = "WorkflowExecute"
    EXECUTION_READ = "ExecutionRead"
    EXECUTION_CANCEL = "ExecutionCancel"
    ADMIN_ACCESS = "AdminAccess"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "developer": frozenset(Permission) - {Permission.ADMIN_ACCESS},
    "viewer": frozenset({Permission.WORKFLOW_READ, Permission.EXECUTION_READ}),
}

SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "workflow:read": frozenset({Permission.WORKFLOW_READ}),
    "workflow:write": frozenset({Permission.WORKFLOW_WRITE}),
    "workflow:delete": frozenset({Permission.WORKFLOW_DELETE}),
    "workflow:execute": frozenset({Permission.WORKFLOW_EXECUTE}),
    "execution:read": frozenset({Permission.EXECUTION_READ}),
    "execution:cancel": frozenset({Permission.EXECUTION_CANCEL}),
    "admin": frozenset({Permission.ADMIN_ACCESS}),
}

ROLES = tuple(ROLE_PERMISSIONS)
SCOPES = tuple(SCOPE_PERMISSIONS)


def permissions_for_roles(roles: Iterable[str]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


def permissions_for_scopes(scopes: Iterable[str]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for scope in scopes:
        granted |= SCOPE_PERMISSIONS.get(scope, frozenset())
    return frozenset(granted)


def key_permissions(scopes: Iterable[str], owner_roles: Iterable[str]) -> frozenset[Permission]:
    """What a key may do: its scopes, never more than its owner's roles allow today."""
    return permissions_for_scopes(scopes) & permissions_for_roles(owner_roles)
