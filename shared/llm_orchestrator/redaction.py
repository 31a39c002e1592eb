"""Keeping secret values out of log lines, error messages, audit events and execution state.

Every value the platform resolves from the secrets store or the environment for a provider
(an API key, a base URL that may carry ``user:password@``) is registered here when it is
resolved. ``redact`` replaces any registered value, and the parts of a URL that are secret on
their own (the password, ``user:password``), with ``[redacted]``.

``install_log_redaction`` applies it to every log record the process creates, whichever
logger (ours, httpx's INFO request lines, the SDKs') and whichever handler (uvicorn's, the
Lambda runtime's, a test's): the record factory is the one place all of them pass through.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""Shorter values are not redacted: replacing every "abc" in every log line would destroy
the logs and protect nothing worth a secret."""
MAX_REGISTERED = 512
"""Rotated secrets keep old values registered for a while; beyond this the oldest go."""

_lock = threading.Lock()
_values: OrderedDict[str, None] = OrderedDict()
_ordered: tuple[str, ...] = ()
"""Registered values, longest first, so a URL is replaced whole before its password."""


def _forms(value: str) -> Iterable[str]:
    yield value
    decoded = unquote(value)
    if decoded != value:
        yield decoded
    if "://" not in value:
        return
    try:
        parts = urlsplit(value)
        username, password = parts.username, parts.password
    except ValueError:
        return
    if password:
        yield password
        yield unquote(password)
        if username:
            yield f"{username}:{password}"


def register_secret(value: str | None) -> None:
    """Remember ``value`` (and its secret parts) as something no output may contain."""
    global _ordered
    if not value:
        return
    forms = [f for f in {f.strip() for f in _forms(value)} if len(f) >= MIN_SECRET_CHARS]
    if not forms:
        return
    with _lock:
        changed = False
        for form in forms:
            if form in _values:
                _values.move_to_end(form)
            else:
                _values[form] = None
                changed = True
        while len(_values) > MAX_REGISTERED:
            _values.popitem(last=False)
            changed = True
        if changed:
            _ordered = tuple(sorted(_values, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``[redacted]``."""
    for value in _ordered:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_data(data: Any) -> Any:
    """A JSON-like structure with every string (keys included) redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data


def contains_secret(text: str) -> bool:
    return any(value in text for value in _ordered)


_installed = False
_exception_formatter = logging.Formatter()


def install_log_redaction() -> None:
    """Redact every log record created from now on in this process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _ordered:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's problem, not ours
            return record
        if contains_secret(message):
            record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            text = _exception_formatter.formatException(record.exc_info)
            if contains_secret(text):
                # Formatters use the cached text rather than formatting the exception again.
                record.exc_text = redact(text)
                record.exc_info = None
        if record.stack_info and contains_secret(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
