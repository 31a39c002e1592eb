"""Control messages between runners: only sealed, fresh, unseen ones addressed here open."""

from __future__ import annotations

import json

import pytest

from llm_orchestrator.store.runners import CONTROL_FRESH_SECONDS, ControlSigner


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


MESSAGE = {"op": "control", "action": "cancel", "execution": "exec-1", "request": "r"}


def test_a_sealed_message_opens_once_for_its_runner() -> None:
    signer = ControlSigner("jwt-secret", clock=Clock())
    payload = signer.seal(7, MESSAGE)
    opened = signer.open(7, payload)
    assert {key: opened[key] for key in MESSAGE} == MESSAGE
    with pytest.raises(ValueError, match="replayed"):
        signer.open(7, payload)


def test_a_message_for_another_runner_is_refused() -> None:
    signer = ControlSigner("jwt-secret", clock=Clock())
    with pytest.raises(ValueError, match="another runner"):
        signer.open(8, signer.seal(7, MESSAGE))


def test_a_stale_message_is_refused() -> None:
    clock = Clock()
    signer = ControlSigner("jwt-secret", clock=clock)
    payload = signer.seal(7, MESSAGE)
    clock.now += CONTROL_FRESH_SECONDS + 1
    with pytest.raises(ValueError, match="stale"):
        signer.open(7, payload)


@pytest.mark.parametrize(
    "payload",
    ["", "[" * 5000, json.dumps(MESSAGE), "0" * 64 + "." + json.dumps(MESSAGE), "."],
)
def test_unsigned_or_garbled_payloads_are_refused(payload: str) -> None:
    with pytest.raises(ValueError, match="not signed"):
        ControlSigner("jwt-secret", clock=Clock()).open(7, payload)


def test_a_changed_body_or_another_deployments_key_is_refused() -> None:
    clock = Clock()
    payload = ControlSigner("jwt-secret", clock=clock).seal(7, MESSAGE)
    mac, _, body = payload.partition(".")
    with pytest.raises(ValueError, match="not signed"):
        ControlSigner("jwt-secret", clock=clock).open(
            7, mac + "." + body.replace("cancel", "resume")
        )
    with pytest.raises(ValueError, match="not signed"):
        ControlSigner("other-secret", clock=clock).open(7, payload)
