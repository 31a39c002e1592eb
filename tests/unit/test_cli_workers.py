"""``llmo serve --workers`` and ``--log-level``: a value outside what they take is a usage
error (exit code 2)."""

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


@pytest.mark.parametrize("level", ["loud", "verbose", ""])
def test_an_unknown_log_level_is_refused(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--log-level", level])
    assert exited.value.code == 2
    assert "--log-level" in capsys.readouterr().err


def test_every_log_level_uvicorn_knows_is_taken_in_any_case() -> None:
    from uvicorn.config import LOG_LEVELS

    for name in LOG_LEVELS:
        assert build_parser().parse_args(["serve", "--log-level", name.upper()]).log_level == name
