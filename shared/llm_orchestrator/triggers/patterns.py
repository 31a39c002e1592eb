"""EventBridge event patterns: validation and matching, with EventBridge's semantics.

A pattern is a JSON object whose leaves are arrays of matchers; an event matches when
every field the pattern names matches one of its matchers (a field holding an array
matches when any element does). Matchers: a literal (exact value: a string, a number
compared numerically, ``true``/``false``, ``null``), ``{"prefix": …}``, ``{"suffix": …}``,
``{"equals-ignore-case": …}``, ``{"wildcard": "a*b"}``, ``{"anything-but": value | [values]
| {"prefix"|"suffix"|"equals-ignore-case": …}}``, ``{"numeric": [">", 0, "<=", 5]}`` and
``{"exists": true|false}``; ``"$or": [pattern, …]`` matches when any alternative does.
Only leaves (not objects) count as present for ``exists`` and the value matchers.

The same code checks a pattern at create time (the messages name the offending path) and
matches events locally, so a pattern behaves the same on a laptop and on EventBridge.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

MAX_PATTERN_CHARS = 4096
MAX_DEPTH = 10
NUMERIC_LIMIT = 5e9
"""EventBridge compares numbers between -5e9 and 5e9."""
_LOWER_OPS = (">", ">=")
_UPPER_OPS = ("<", "<=")
_STRING_MATCHERS = ("prefix", "suffix", "equals-ignore-case")
_MATCHERS = (*_STRING_MATCHERS, "wildcard", "anything-but", "numeric", "exists")

_ABSENT = object()


class PatternError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def pattern_errors(pattern: Any, path: str = "event_pattern") -> list[PatternError]:
    """Every problem with ``pattern``, each naming its path; empty when it is valid."""
    if not isinstance(pattern, dict) or not pattern:
        return [PatternError(path, "must be a non-empty JSON object")]
    if len(json.dumps(pattern, separators=(",", ":"))) > MAX_PATTERN_CHARS:
        return [PatternError(path, f"must be at most {MAX_PATTERN_CHARS} characters as JSON")]
    return list(_object_errors(pattern, path, depth=1))


def _object_errors(pattern: dict[str, Any], path: str, depth: int) -> Iterator[PatternError]:
    if depth > MAX_DEPTH:
        yield PatternError(path, f"nests deeper than {MAX_DEPTH} levels")
        return
    for key, spec in pattern.items():
        where = f"{path}.{key}"
        if key == "$or":
            if not isinstance(spec, list) or len(spec) < 2:
                yield PatternError(where, "must be an array of at least two patterns")
                continue
            for index, alternative in enumerate(spec):
                if not isinstance(alternative, dict) or not alternative:
                    yield PatternError(f"{where}[{index}]", "must be a non-empty JSON object")
                else:
                    yield from _object_errors(alternative, f"{where}[{index}]", depth + 1)
        elif isinstance(spec, dict):
            if not spec:
                yield PatternError(where, "must not be an empty object")
            else:
                yield from _object_errors(spec, where, depth + 1)
        elif isinstance(spec, list):
            if not spec:
                yield PatternError(where, "must list at least one value to match")
            for index, matcher in enumerate(spec):
                yield from _matcher_errors(matcher, f"{where}[{index}]")
        else:
            yield PatternError(where, "must be an array of values to match, or an object")


def _matcher_errors(matcher: Any, path: str) -> Iterator[PatternError]:
    if matcher is None or isinstance(matcher, str | bool):
        return
    if isinstance(matcher, int | float):
        yield from _number_errors(matcher, path)
        return
    if not isinstance(matcher, dict) or len(matcher) != 1:
        yield PatternError(path, f"must be a value or an object with one of {list(_MATCHERS)}")
        return
    (kind, operand), where = next(iter(matcher.items())), f"{path}.{next(iter(matcher))}"
    if kind in ("prefix", "suffix"):
        if isinstance(operand, dict) and list(operand) == ["equals-ignore-case"]:
            operand = operand["equals-ignore-case"]
        if not isinstance(operand, str):
            yield PatternError(where, "must be a string")
    elif kind in ("equals-ignore-case", "wildcard"):
        if not isinstance(operand, str):
            yield PatternError(where, "must be a string")
    elif kind == "exists":
        if not isinstance(operand, bool):
            yield PatternError(where, "must be true or false")
    elif kind == "numeric":
        yield from _numeric_errors(operand, where)
    elif kind == "anything-but":
        yield from _anything_but_errors(operand, where)
    else:
        yield PatternError(path, f"unknown matcher '{kind}'; use one of {list(_MATCHERS)}")


def _number_errors(value: Any, path: str) -> Iterator[PatternError]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        yield PatternError(path, "must be a number")
    elif not math.isfinite(value) or abs(value) > NUMERIC_LIMIT:
        yield PatternError(
            path, f"must be a number between -{NUMERIC_LIMIT:.0e} and {NUMERIC_LIMIT:.0e}"
        )


def _numeric_errors(operand: Any, path: str) -> Iterator[PatternError]:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        yield PatternError(path, 'must be [op, number] or [">"|">=", low, "<"|"<=", high]')
        return
    ops, numbers = operand[0::2], operand[1::2]
    for index, number in enumerate(numbers):
        yield from _number_errors(number, f"{path}[{2 * index + 1}]")
    if len(operand) == 2:
        if ops[0] not in ("=", *_LOWER_OPS, *_UPPER_OPS):
            yield PatternError(f"{path}[0]", "must be one of =, <, <=, >, >=")
    elif ops[0] not in _LOWER_OPS or ops[1] not in _UPPER_OPS:
        yield PatternError(path, "a range is a lower bound (> or >=) then an upper one (< or <=)")
    elif all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        if numbers[0] >= numbers[1]:
            yield PatternError(path, "the lower bound must be below the upper bound")


def _anything_but_errors(operand: Any, path: str) -> Iterator[PatternError]:
    if isinstance(operand, dict):
        if len(operand) != 1 or next(iter(operand)) not in _STRING_MATCHERS:
            yield PatternError(path, f"an object here takes one of {list(_STRING_MATCHERS)}")
            return
        kind, value = next(iter(operand.items()))
        values = value if isinstance(value, list) and kind == "equals-ignore-case" else [value]
        if not values or not all(isinstance(v, str) for v in values):
            yield PatternError(f"{path}.{kind}", "must be a string")
        return
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        yield PatternError(path, "must list at least one value")
    for index, value in enumerate(values):
        where = f"{path}[{index}]" if isinstance(operand, list) else path
        if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
            yield PatternError(where, "must be a string or a number")
        elif not isinstance(value, str):
            yield from _number_errors(value, where)


# -- matching ----------------------------------------------------------------------------


def matches(pattern: dict[str, Any], event: Any) -> bool:
    """Whether ``event`` matches a pattern that :func:`pattern_errors` accepted."""
    for key, spec in pattern.items():
        if key == "$or":
            if not any(matches(alternative, event) for alternative in spec):
                return False
            continue
        value = event.get(key, _ABSENT) if isinstance(event, dict) else _ABSENT
        if isinstance(spec, dict):
            # A missing or non-object field has no sub-fields: only "exists": false holds.
            if not matches(spec, value if isinstance(value, dict) else {}):
                return False
        elif not _leaf_matches(spec, value):
            return False
    return True


def _leaf_matches(matchers: list[Any], value: Any) -> bool:
    present = value is not _ABSENT and not isinstance(value, dict)
    if not present:
        return any(isinstance(m, dict) and m.get("exists") is False for m in matchers)
    items = value if isinstance(value, list) else [value]
    return any(_matches_one(matcher, item) for matcher in matchers for item in (items or [_ABSENT]))


def _matches_one(matcher: Any, value: Any) -> bool:
    if isinstance(matcher, dict):
        kind, operand = next(iter(matcher.items()))
        if kind == "exists":
            return operand is True and value is not _ABSENT
        if value is _ABSENT:
            return False
        if kind == "anything-but":
            return _anything_but(operand, value)
        if kind == "numeric":
            return _is_number(value) and _numeric(operand, value)
        return isinstance(value, str) and _string_match(kind, operand, value)
    if value is _ABSENT:
        return False
    if matcher is None or isinstance(matcher, bool):
        return value is matcher
    if isinstance(matcher, str):
        return isinstance(value, str) and value == matcher
    return _is_number(value) and float(value) == float(matcher)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_match(kind: str, operand: Any, value: str) -> bool:
    ignore_case = isinstance(operand, dict)
    text = operand["equals-ignore-case"] if ignore_case else operand
    if kind == "equals-ignore-case":
        return value.casefold() == str(text).casefold()
    if ignore_case:
        value, text = value.casefold(), str(text).casefold()
    if kind == "prefix":
        return value.startswith(text)
    if kind == "suffix":
        return value.endswith(text)
    if kind == "wildcard":
        parts = [re.escape(part) for part in str(text).split("*")]
        return re.fullmatch(".*".join(parts), value, flags=re.DOTALL) is not None
    return False


def _anything_but(operand: Any, value: Any) -> bool:
    if isinstance(operand, dict):
        kind, text = next(iter(operand.items()))
        if not isinstance(value, str):
            return False
        if kind == "equals-ignore-case":
            texts = text if isinstance(text, list) else [text]
            return all(value.casefold() != t.casefold() for t in texts)
        return not _string_match(kind, text, value)
    excluded = operand if isinstance(operand, list) else [operand]
    if isinstance(value, str):
        return value not in [e for e in excluded if isinstance(e, str)]
    if _is_number(value):
        return float(value) not in [float(e) for e in excluded if _is_number(e)]
    return False


def _numeric(operand: list[Any], value: float) -> bool:
    for op, bound in zip(operand[0::2], operand[1::2], strict=True):
        if not {
            "=": value == bound,
            ">": value > bound,
            ">=": value >= bound,
            "<": value < bound,
            "<=": value <= bound,
        }[op]:
            return False
    return True
