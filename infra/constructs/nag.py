"""Acknowledging cdk-nag findings: every one with its reason, next to the code it is about."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept ``rule`` (``AwsSolutions-XX`` or ``AwsSolutions-XX[finding]``) on ``scope`` and
    everything under it, for ``reason``."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
