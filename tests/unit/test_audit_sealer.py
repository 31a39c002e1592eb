"""The audit key never shows in a Sealer's repr (a log line, a traceback with locals)."""

from __future__ import annotations

from functools import partial

from llm_orchestrator.audit.trail import canonical_json, link_hash, pending_mac_of
from llm_orchestrator.store.audit import Sealer


def test_a_sealers_repr_does_not_show_the_audit_key() -> None:
    key = b"the-audit-key-that-must-stay-secret"
    sealer = Sealer(
        canonical=canonical_json,
        link=partial(link_hash, key),
        pending_mac=partial(pending_mac_of, key),
        rejection=lambda row, reason: {},
    )

    shown = repr(sealer) + str(sealer)

    assert "the-audit-key" not in shown
    assert sealer.link("sha256:genesis", "{}").startswith("hmac-sha256:")
