"""Public identifiers: a readable prefix and a random UUID, as the spec's examples show."""

from __future__ import annotations

import uuid


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"


def user_id() -> str:
    return new_id("user-")


def execution_id() -> str:
    return new_id("exec-")


def checkpoint_id() -> str:
    return new_id("ckpt-")


def event_id() -> str:
    return new_id("evt-")


def trigger_id() -> str:
    """On AWS also the schedule's name and, after ``llmo-``, the event rule's: the stack's
    IAM scopes rely on this prefix (tests/infra checks them against it)."""
    return new_id("trg-")
