"""Schedule expressions: what EventBridge Scheduler accepts, and when each fires next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llm_orchestrator.triggers.schedule import Cron, Rate, ScheduleError, parse_schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(12 hours)", timedelta(hours=12)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(30 days)", timedelta(days=30)),
    ],
)
def test_rates_parse_to_their_interval(expression: str, interval: timedelta) -> None:
    schedule = parse_schedule(expression)

    assert isinstance(schedule, Rate) and schedule.interval == interval


def test_a_rate_ticks_from_its_anchor() -> None:
    rate = parse_schedule("rate(5 minutes)")
    anchor = at("2026-01-01T10:00:30")

    assert rate.next_after(anchor, anchor) == at("2026-01-01T10:05:30")
    assert rate.next_after(at("2026-01-01T10:05:30"), anchor) == at("2026-01-01T10:10:30")
    assert rate.next_after(at("2026-01-01T11:00:00"), anchor) == at("2026-01-01T11:00:30")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(0 minutes)", "positive"),
        ("rate(1 minutes)", "singular"),
        ("rate(5 minute)", "plural"),
        ("rate(5 seconds)", "unit"),
        ("rate(five minutes)", "rate is"),
        ("rate(-1 minutes)", "rate is"),
        ("every 5 minutes", "must be"),
        ("cron(0 9 * * *)", "six fields"),
        ("cron(0 9 * * * *)", "exactly one"),
        ("cron(0 9 ? * ? *)", "exactly one"),
        ("cron(60 9 * * ? *)", "minutes: 60"),
        ("cron(0 24 * * ? *)", "hours: 24"),
        ("cron(0 9 32 * ? *)", "day-of-month: 32"),
        ("cron(0 9 * 13 ? *)", "month: 13"),
        ("cron(0 9 ? * 8 *)", "day-of-week: 8"),
        ("cron(0 9 * * ? 1969)", "year: 1969"),
        ("cron(0 9 * * ? 2200)", "year: 2200"),
        ("cron(0/0 9 * * ? *)", "positive step"),
        ("cron(30-10 9 * * ? *)", "backwards"),
        ("cron(x 9 * * ? *)", "not a number"),
        ("cron(0 0 30 2 ? *)", "never fires"),
        ("cron(0 9 ? * 2#6 *)", "day-of-week: 6"),
        ("cron(0 9 3L * ? *)", "day-of-month"),
        ("rate(" + "9" * 300 + " minutes)", "at most"),
    ],
)
def test_invalid_expressions_are_refused_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expression)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(0 9 * * ? *)", "2026-03-01T08:59:59", "2026-03-01T09:00:00"),
        ("cron(0 9 * * ? *)", "2026-03-01T09:00:00", "2026-03-02T09:00:00"),
        ("cron(*/15 * * * ? *)", "2026-03-01T10:07:00", "2026-03-01T10:15:00"),
        ("cron(0 18 ? * MON-FRI *)", "2026-11-27T19:00:00", "2026-11-30T18:00:00"),
        ("cron(0 8 1 * ? *)", "2026-01-15T00:00:00", "2026-02-01T08:00:00"),
        ("cron(0 12 L * ? *)", "2026-02-01T00:00:00", "2026-02-28T12:00:00"),
        ("cron(0 12 L * ? *)", "2028-02-01T00:00:00", "2028-02-29T12:00:00"),
        ("cron(0 12 ? * 6L *)", "2026-11-01T00:00:00", "2026-11-27T12:00:00"),
        ("cron(0 12 ? * 2#1 *)", "2026-11-03T00:00:00", "2026-12-07T12:00:00"),
        ("cron(0 12 15W * ? *)", "2026-11-01T00:00:00", "2026-11-16T12:00:00"),
        ("cron(0 12 LW * ? *)", "2026-05-01T00:00:00", "2026-05-29T12:00:00"),
        ("cron(0 0 1 JAN ? 2030)", "2026-01-01T00:00:00", "2030-01-01T00:00:00"),
        ("cron(5,35 1-2 * * ? *)", "2026-01-01T01:40:00", "2026-01-01T02:05:00"),
    ],
)
def test_cron_fires_at_the_next_matching_minute(expression: str, after: str, expected: str) -> None:
    schedule = parse_schedule(expression)

    assert isinstance(schedule, Cron)
    assert schedule.next_after(at(after)) == at(expected)


def test_a_cron_whose_years_have_passed_never_fires_again() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2020)")

    assert isinstance(schedule, Cron)
    assert schedule.next_after(at("2026-01-01T00:00:00")) is None
