"""EventBridge pattern semantics: validation messages and what matches what."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.triggers.patterns import matches, pattern_errors

EVENT: dict[str, Any] = {
    "version": "0",
    "id": "e-1",
    "source": "my.app",
    "detail-type": "Document Uploaded",
    "resources": ["arn:doc/1", "arn:doc/2"],
    "detail": {
        "kind": "doc.pdf",
        "size": 120,
        "ratio": 0.5,
        "owner": "Alice",
        "tags": ["urgent", "finance"],
        "flag": True,
        "nothing": None,
        "nested": {"level": "deep"},
    },
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["my.app"]}, True),
        ({"source": ["other.app", "my.app"]}, True),
        ({"source": ["my.ap"]}, False),
        ({"detail-type": ["Document Uploaded"], "source": ["my.app"]}, True),
        ({"detail-type": ["Document Uploaded"], "source": ["nope"]}, False),
        ({"detail": {"size": [120]}}, True),
        ({"detail": {"size": [120.0]}}, True),
        ({"detail": {"size": ["120"]}}, False),
        ({"detail": {"flag": [True]}}, True),
        ({"detail": {"flag": [1]}}, False),
        ({"detail": {"nothing": [None]}}, True),
        ({"detail": {"owner": [None]}}, False),
        ({"detail": {"tags": ["finance"]}}, True),
        ({"detail": {"tags": ["legal"]}}, False),
        ({"resources": ["arn:doc/2"]}, True),
        ({"detail": {"nested": {"level": ["deep"]}}}, True),
        ({"detail": {"kind": [{"prefix": "doc."}]}}, True),
        ({"detail": {"kind": [{"prefix": "pdf"}]}}, False),
        ({"detail": {"size": [{"prefix": "1"}]}}, False),
        ({"detail": {"owner": [{"prefix": {"equals-ignore-case": "ali"}}]}}, True),
        ({"detail": {"kind": [{"suffix": ".pdf"}]}}, True),
        ({"detail": {"owner": [{"equals-ignore-case": "ALICE"}]}}, True),
        ({"detail": {"kind": [{"wildcard": "doc*pdf"}]}}, True),
        ({"detail": {"kind": [{"wildcard": "doc*txt"}]}}, False),
        ({"detail": {"owner": [{"anything-but": "Bob"}]}}, True),
        ({"detail": {"owner": [{"anything-but": ["Bob", "Alice"]}]}}, False),
        ({"detail": {"size": [{"anything-but": [100, 200]}]}}, True),
        ({"detail": {"size": [{"anything-but": 120}]}}, False),
        ({"detail": {"kind": [{"anything-but": {"prefix": "img"}}]}}, True),
        ({"detail": {"kind": [{"anything-but": {"prefix": "doc"}}]}}, False),
        ({"detail": {"missing": [{"anything-but": "x"}]}}, False),
        ({"detail": {"size": [{"numeric": [">", 100]}]}}, True),
        ({"detail": {"size": [{"numeric": [">", 0, "<=", 120]}]}}, True),
        ({"detail": {"size": [{"numeric": [">=", 0, "<", 120]}]}}, False),
        ({"detail": {"size": [{"numeric": ["=", 120]}]}}, True),
        ({"detail": {"ratio": [{"numeric": ["<", 1]}]}}, True),
        ({"detail": {"owner": [{"numeric": [">", 0]}]}}, False),
        ({"detail": {"flag": [{"numeric": ["=", 1]}]}}, False),
        ({"detail": {"owner": [{"exists": True}]}}, True),
        ({"detail": {"missing": [{"exists": True}]}}, False),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"owner": [{"exists": False}]}}, False),
        ({"detail": {"nested": [{"exists": True}]}}, False),
        ({"absent": {"deeper": [{"exists": False}]}}, True),
        ({"absent": {"deeper": ["x"]}}, False),
        ({"detail": {"missing": ["x", {"exists": False}]}}, True),
        ({"$or": [{"source": ["nope"]}, {"detail": {"size": [120]}}]}, True),
        ({"$or": [{"source": ["nope"]}, {"detail": {"size": [121]}}]}, False),
    ],
)
def test_matching_follows_eventbridge(pattern: dict[str, Any], expected: bool) -> None:
    assert pattern_errors(pattern) == []

    assert matches(pattern, EVENT) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "message"),
    [
        ([], "event_pattern", "non-empty JSON object"),
        ({}, "event_pattern", "non-empty JSON object"),
        ({"source": "my.app"}, "event_pattern.source", "array"),
        ({"source": []}, "event_pattern.source", "at least one"),
        ({"detail": {}}, "event_pattern.detail", "empty object"),
        ({"source": [{"prefix": 1}]}, "event_pattern.source[0].prefix", "string"),
        ({"source": [{"bogus": "x"}]}, "event_pattern.source[0]", "unknown matcher"),
        ({"source": [{"prefix": "a", "suffix": "b"}]}, "event_pattern.source[0]", "one of"),
        ({"source": [["nested"]]}, "event_pattern.source[0]", "one of"),
        ({"n": [{"exists": "yes"}]}, "event_pattern.n[0].exists", "true or false"),
        ({"n": [{"numeric": [">"]}]}, "event_pattern.n[0].numeric", "op, number"),
        ({"n": [{"numeric": ["!=", 1]}]}, "event_pattern.n[0].numeric[0]", "one of"),
        ({"n": [{"numeric": ["<", 1, ">", 5]}]}, "event_pattern.n[0].numeric", "lower bound"),
        ({"n": [{"numeric": [">", 5, "<", 1]}]}, "event_pattern.n[0].numeric", "below"),
        ({"n": [{"numeric": [">", "5"]}]}, "event_pattern.n[0].numeric[1]", "number"),
        ({"n": [{"numeric": [">", 1e12]}]}, "event_pattern.n[0].numeric[1]", "between"),
        ({"n": [1e12]}, "event_pattern.n[0]", "between"),
        ({"n": [{"anything-but": []}]}, "event_pattern.n[0].anything-but", "at least one"),
        ({"n": [{"anything-but": [True]}]}, "event_pattern.n[0].anything-but[0]", "string or"),
        (
            {"n": [{"anything-but": {"numeric": [">", 1]}}]},
            "event_pattern.n[0].anything-but",
            "one of",
        ),
        ({"$or": [{"a": ["x"]}]}, "event_pattern.$or", "at least two"),
        ({"$or": [{"a": ["x"]}, {}]}, "event_pattern.$or[1]", "non-empty"),
        ({"s": ["x" * 5000]}, "event_pattern", "at most"),
    ],
)
def test_invalid_patterns_name_the_offending_path(pattern: Any, path: str, message: str) -> None:
    errors = pattern_errors(pattern)

    assert errors, "expected the pattern to be refused"
    assert errors[0].path == path
    assert message in errors[0].message


def test_every_problem_is_reported_at_once() -> None:
    errors = pattern_errors({"a": "x", "b": [], "c": [{"exists": 1}]})

    assert [e.path for e in errors] == [
        "event_pattern.a",
        "event_pattern.b",
        "event_pattern.c[0].exists",
    ]
