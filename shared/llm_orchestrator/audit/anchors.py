"""Anchors: the audit chain's head, signed and kept outside the database.

HMAC links stop anyone without the key from rewriting events, but not from cutting the
chain back to an earlier, still valid, head (a DELETE of the newest events plus an UPDATE
of the head row, for someone holding the database's owner credentials). An anchor records
``(seq, event_hash)`` of the head at a moment, signed with a key derived from the audit key,
somewhere that database credentials cannot reach: ``verify`` then insists that the chain
still reaches that head, unchanged. As with CloudTrail's digest files, the anchor store's
own integrity is what it rests on: locally a JSON-lines file in the data directory plus the
process log; on AWS the log line lands in CloudWatch Logs (see the README).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

ANCHOR_LOGGER = "llm_orchestrator.audit.anchor"
log = logging.getLogger(ANCHOR_LOGGER)
ANCHOR_LOG_PREFIX = "audit-anchor "


@dataclass(frozen=True)
class Anchor:
    seq: int
    event_hash: str
    anchored_at: datetime
    signature: str

    def payload(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "event_hash": self.event_hash,
            "anchored_at": self.anchored_at.isoformat(),
            "signature": self.signature,
        }


def _anchor_key(audit_key: bytes) -> bytes:
    # Its own key, so an anchor signature can never be replayed as an event hash.
    return hmac.new(audit_key, b"llmo-audit-anchor-v1", hashlib.sha256).digest()


def _signed_text(seq: int, event_hash: str, anchored_at: datetime) -> bytes:
    return f"{seq}|{event_hash}|{anchored_at.isoformat()}".encode()


def sign_anchor(audit_key: bytes, seq: int, event_hash: str, anchored_at: datetime) -> Anchor:
    mac = hmac.new(_anchor_key(audit_key), _signed_text(seq, event_hash, anchored_at), "sha256")
    return Anchor(seq, event_hash, anchored_at, f"hmac-sha256:{mac.hexdigest()}")


def anchor_is_authentic(audit_key: bytes, anchor: Anchor) -> bool:
    expected = sign_anchor(audit_key, anchor.seq, anchor.event_hash, anchor.anchored_at)
    return hmac.compare_digest(expected.signature, anchor.signature)


def parse_anchor(text: str) -> Anchor | None:
    try:
        data = json.loads(text)
        return Anchor(
            seq=int(data["seq"]),
            event_hash=str(data["event_hash"]),
            anchored_at=datetime.fromisoformat(str(data["anchored_at"])),
            signature=str(data["signature"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class AnchorStore(Protocol):
    async def write(self, anchor: Anchor) -> None: ...

    async def latest(self) -> Anchor | None:
        """The newest anchor this store can read back; None when it keeps none readable."""
        ...


class LogAnchorStore:
    """Anchors as signed log lines (``audit-anchor {json}``), and locally also appended to a
    file (``path``) that ``latest`` reads back. Without a file (on AWS) the log is the store:
    CloudWatch Logs keeps the lines, out of reach of the database's credentials."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    async def write(self, anchor: Anchor) -> None:
        line = json.dumps(anchor.payload(), sort_keys=True, separators=(",", ":"))
        log.info("%s%s", ANCHOR_LOG_PREFIX, line)
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    async def latest(self) -> Anchor | None:
        if self._path is None or not self._path.exists():
            return None
        newest: Anchor | None = None
        with self._path.open(encoding="utf-8") as handle:
            for line in handle:
                parsed = parse_anchor(line.strip()) if line.strip() else None
                if parsed is not None and (newest is None or parsed.seq >= newest.seq):
                    newest = parsed
        return newest
