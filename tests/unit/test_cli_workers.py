"""``llmo serve --workers``: a count outside 1..64 is a usage error (exit code 2)."""

from __future__ import annotations

import pytest

from llm_orchestrator.cli import build_parser


@pytest.mark.parametrize("count", ["0", "-2", "65", "two", "1.5"])
def test_a_worker_count_outside_the_range_is_refused(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--workers", count])
    assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_a_worker_count_in_range_is_taken() -> None:
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["serve"]).workers is None
