"""Schedule expressions, as EventBridge Scheduler reads them: ``rate(…)`` and ``cron(…)``.

``parse_schedule`` refuses anything EventBridge would refuse (and a cron that can never
fire), with a message that says what is wrong; ``next_after`` is what the local scheduler
uses to decide when a schedule fires next. Times are UTC, as on EventBridge without a
schedule time zone.

Cron fields: minutes, hours, day-of-month, month, day-of-week, year. Day-of-week counts
1 = SUN … 7 = SAT. Exactly one of day-of-month and day-of-week is ``?``. Specials:
``L`` (last day of the month), ``LW`` / ``15W`` (nearest weekday), ``6L`` (last Friday of
the month) and ``6#3`` (third Friday).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MAX_SCHEDULE_CHARS = 256
MIN_YEAR, MAX_YEAR = 1970, 2199

_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    name: index
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


class ScheduleError(ValueError):
    """The expression is not one EventBridge Scheduler accepts."""


@dataclass(frozen=True)
class Rate:
    expression: str
    interval: timedelta

    def next_after(self, after: datetime, anchor: datetime) -> datetime:
        """The first tick ``anchor + k·interval`` (k ≥ 1) later than ``after``."""
        if after < anchor:
            return anchor + self.interval
        ticks = (after - anchor) // self.interval + 1
        return anchor + ticks * self.interval


@dataclass(frozen=True)
class _DayOfMonth:
    days: frozenset[int]
    last: bool = False
    weekday_near: int | None = None
    """``15W`` → 15; ``LW`` → -1 (the last day)."""

    def matches(self, day: date) -> bool:
        month_days = calendar.monthrange(day.year, day.month)[1]
        if self.last:
            return day.day == month_days
        if self.weekday_near is not None:
            target = month_days if self.weekday_near == -1 else self.weekday_near
            return target <= month_days and day == _nearest_weekday(
                date(day.year, day.month, target)
            )
        return day.day in self.days


@dataclass(frozen=True)
class _DayOfWeek:
    days: frozenset[int]
    last_of: int | None = None
    """``6L``: the last Friday of the month."""
    nth: tuple[int, int] | None = None
    """``6#3``: (weekday, n)."""

    def matches(self, day: date) -> bool:
        weekday = _aws_weekday(day)
        if self.last_of is not None:
            return (
                weekday == self.last_of
                and day.day + 7 > calendar.monthrange(day.year, day.month)[1]
            )
        if self.nth is not None:
            return weekday == self.nth[0] and (day.day - 1) // 7 + 1 == self.nth[1]
        return weekday in self.days


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    day_of_month: _DayOfMonth | None
    months: frozenset[int]
    day_of_week: _DayOfWeek | None
    years: frozenset[int]

    def next_after(self, after: datetime, anchor: datetime | None = None) -> datetime | None:
        """The first matching minute later than ``after``, or None if there is none."""
        start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for year in sorted(y for y in self.years if y >= start.year):
            for month in sorted(self.months):
                if (year, month) < (start.year, start.month):
                    continue
                for day_number in range(1, calendar.monthrange(year, month)[1] + 1):
                    day = date(year, month, day_number)
                    if day < start.date() or not self._day_matches(day):
                        continue
                    found = self._first_time(day, start)
                    if found is not None:
                        return found
        return None

    def _day_matches(self, day: date) -> bool:
        if self.day_of_month is not None:
            return self.day_of_month.matches(day)
        assert self.day_of_week is not None
        return self.day_of_week.matches(day)

    def _first_time(self, day: date, start: datetime) -> datetime | None:
        for hour in sorted(self.hours):
            for minute in sorted(self.minutes):
                moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                if moment >= start:
                    return moment
        return None


Schedule = Rate | Cron


def parse_schedule(expression: str) -> Schedule:
    if len(expression) > MAX_SCHEDULE_CHARS:
        raise ScheduleError(f"must be at most {MAX_SCHEDULE_CHARS} characters")
    if expression.startswith("rate("):
        return _parse_rate(expression)
    if expression.startswith("cron("):
        return _parse_cron(expression)
    raise ScheduleError("must be 'rate(<value> <unit>)' or 'cron(<6 fields>)'")


def _parse_rate(expression: str) -> Rate:
    match = _RATE.match(expression)
    if match is None:
        raise ScheduleError(
            "a rate is 'rate(<value> <unit>)' with unit minute(s), hour(s) or day(s)"
        )
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ScheduleError(f"unknown rate unit '{unit}'; use minute(s), hour(s) or day(s)")
    if value < 1:
        raise ScheduleError("a rate's value must be a positive whole number")
    if value == 1 and unit != singular:
        raise ScheduleError(f"a rate of 1 takes the singular unit: 'rate(1 {singular})'")
    if value > 1 and unit == singular:
        raise ScheduleError(f"a rate above 1 takes the plural unit: 'rate({value} {unit}s)'")
    interval = timedelta(seconds=value * _RATE_UNITS[singular])
    if interval > timedelta(days=365 * 10):
        raise ScheduleError("a rate may be at most ten years")
    return Rate(expression, interval)


def _parse_cron(expression: str) -> Cron:
    match = _CRON.match(expression)
    assert match is not None
    fields = match.group(1).split()
    if len(fields) != 6:
        raise ScheduleError(
            "a cron has six fields: minutes hours day-of-month month day-of-week year"
            f" (got {len(fields)})"
        )
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ScheduleError("exactly one of day-of-month and day-of-week must be '?'")
    cron = Cron(
        expression=expression,
        minutes=_field(minutes, "minutes", 0, 59),
        hours=_field(hours, "hours", 0, 23),
        day_of_month=None if dom == "?" else _day_of_month(dom),
        months=_field(month, "month", 1, 12, names=_MONTHS),
        day_of_week=None if dow == "?" else _day_of_week(dow),
        years=_field(year, "year", MIN_YEAR, MAX_YEAR),
    )
    if cron.next_after(datetime(MIN_YEAR, 1, 1, tzinfo=UTC)) is None:
        raise ScheduleError("this cron never fires (no date matches it)")
    return cron


def _field(
    text: str, name: str, low: int, high: int, *, names: dict[str, int] | None = None
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        values |= _part(part, name, low, high, names or {})
    return frozenset(values)


def _part(part: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ScheduleError(f"{name}: '{part}' needs a positive step after '/'")
        step = int(step_text)
    if base == "*":
        first, last = low, high
    elif "-" in base:
        start_text, _, end_text = base.partition("-")
        first = _value(start_text, name, low, high, names)
        last = _value(end_text, name, low, high, names)
        if first > last:
            raise ScheduleError(f"{name}: range '{base}' runs backwards")
    else:
        first = _value(base, name, low, high, names)
        last = high if slash else first
    return set(range(first, last + 1, step))


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise ScheduleError(f"{name}: '{text}' is not a number between {low} and {high}")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{name}: {value} is outside {low}..{high}")
    return value


def _day_of_month(text: str) -> _DayOfMonth:
    if text == "L":
        return _DayOfMonth(frozenset(), last=True)
    if text == "LW":
        return _DayOfMonth(frozenset(), weekday_near=-1)
    if text.endswith("W"):
        return _DayOfMonth(frozenset(), weekday_near=_value(text[:-1], "day-of-month", 1, 31, {}))
    if "L" in text or "W" in text:
        raise ScheduleError(f"day-of-month: '{text}' is not valid ('L', 'LW' or 'nW' alone)")
    return _DayOfMonth(_field(text, "day-of-month", 1, 31))


def _day_of_week(text: str) -> _DayOfWeek:
    if "#" in text:
        day_text, _, nth_text = text.partition("#")
        day = _value(day_text, "day-of-week", 1, 7, _DAYS)
        nth = _value(nth_text, "day-of-week", 1, 5, {})
        return _DayOfWeek(frozenset(), nth=(day, nth))
    if text.endswith("L") and len(text) > 1:
        return _DayOfWeek(frozenset(), last_of=_value(text[:-1], "day-of-week", 1, 7, _DAYS))
    return _DayOfWeek(_field(text, "day-of-week", 1, 7, names=_DAYS))


def _aws_weekday(day: date) -> int:
    """1 = Sunday … 7 = Saturday (Python counts Monday = 0)."""
    return (day.weekday() + 1) % 7 + 1


def _nearest_weekday(day: date) -> date:
    """The weekday nearest ``day`` within its month (Quartz's ``W``)."""
    if day.weekday() == 5:  # Saturday → Friday, or Monday if Friday is last month
        return day - timedelta(days=1) if day.day > 1 else day + timedelta(days=2)
    if day.weekday() == 6:  # Sunday → Monday, or Friday if Monday is next month
        month_days = calendar.monthrange(day.year, day.month)[1]
        return day + timedelta(days=1) if day.day < month_days else day - timedelta(days=2)
    return day
