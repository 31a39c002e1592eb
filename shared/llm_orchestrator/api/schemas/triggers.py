"""Trigger and event shapes (beyond the reference: see the README's "Triggers")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_orchestrator.api.schemas.common import PageMeta, StrictModel
from llm_orchestrator.triggers.schedule import MAX_SCHEDULE_CHARS

if TYPE_CHECKING:
    from llm_orchestrator.store.triggers import TriggerRecord
    from llm_orchestrator.triggers.service import Firing, TriggerSpec


class CreateTriggerRequest(StrictModel):
    # The document's schema: the two kinds of trigger and their fields' grammar.
    model_config = ConfigDict(json_schema_extra=lambda schema: _trigger_request_schema(schema))

    type: Literal["schedule", "event"]
    schedule: str | None = Field(
        default=None,
        max_length=MAX_SCHEDULE_CHARS,
        description="schedule triggers: 'rate(5 minutes)' or 'cron(0 9 * * ? *)' (UTC)",
        examples=["rate(5 minutes)"],
    )
    event_pattern: dict[str, Any] | None = Field(
        default=None,
        description="event triggers: an EventBridge event pattern",
        examples=[{"source": ["my.app"], "detail": {"kind": [{"prefix": "doc"}]}}],
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="workflow inputs; a string starting with '$.' is a path into the event",
        examples=[{"text": "$.detail.text"}],
    )
    enabled: bool = True

    def spec(self) -> TriggerSpec:
        from llm_orchestrator.triggers.service import (
            TriggerSpec,  # the workflows Lambda's cold start
        )

        return TriggerSpec(
            type=self.type,
            schedule=self.schedule,
            event_pattern=self.event_pattern,
            inputs=self.inputs,
            enabled=self.enabled,
        )


class TriggerPublic(BaseModel):
    id: str
    workflow_id: uuid.UUID
    type: Literal["schedule", "event"]
    schedule: str | None = None
    event_pattern: dict[str, Any] | None = None
    inputs: dict[str, Any]
    enabled: bool
    status: Literal["active", "stopped"]
    status_reason: str | None = Field(description="why a stopped trigger no longer runs")
    created_by: str | None = Field(description="the user it runs as; null once deleted")
    created_at: datetime
    next_fire_at: datetime | None = Field(
        default=None, description="schedules run by the local scheduler: the next tick"
    )
    last_fired_at: datetime | None
    last_execution_id: str | None
    last_error: str | None = Field(description="why the last firing started no execution")

    @classmethod
    def of(cls, record: TriggerRecord) -> TriggerPublic:
        return cls(
            id=record.id,
            workflow_id=record.workflow_id,
            type=record.type,
            schedule=record.schedule,
            event_pattern=record.event_pattern,
            inputs=record.inputs,
            enabled=record.enabled,
            status=record.status,
            status_reason=record.status_reason,
            created_by=record.created_by,
            created_at=record.created_at,
            next_fire_at=record.next_fire_at,
            last_fired_at=record.last_fired_at,
            last_execution_id=record.last_execution_id,
            last_error=record.last_error,
        )


class TriggerList(PageMeta):
    triggers: list[TriggerPublic]


class PutEventRequest(StrictModel):
    """One PutEvents entry: matched against every live event trigger's pattern."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(min_length=1, max_length=256, examples=["my.app"])
    detail_type: str = Field(
        alias="detail-type", min_length=1, max_length=128, examples=["Document Uploaded"]
    )
    detail: dict[str, Any] = Field(default_factory=dict, examples=[{"text": "hello"}])
    resources: list[str] = Field(default_factory=list, max_length=32)


class StartedExecution(BaseModel):
    trigger_id: str
    workflow_id: str
    execution_id: str | None
    error: str | None = None


class PutEventResponse(BaseModel):
    id: str = Field(description="the event's id (its envelope's 'id')")
    matched: int = Field(description="live event triggers whose pattern matched")
    executions: list[StartedExecution] = Field(
        description="what the caller's own matching triggers did (every one, for an admin)"
    )

    @classmethod
    def of(cls, event_id: str, firings: list[Firing], visible: set[str] | None) -> PutEventResponse:
        return cls(
            id=event_id,
            matched=len(firings),
            executions=[
                StartedExecution(
                    trigger_id=f.trigger_id,
                    workflow_id=f.workflow_id,
                    execution_id=f.execution_id,
                    error=f.error or (f"trigger {f.skipped}" if f.skipped else None),
                )
                for f in firings
                if visible is None or f.created_by in visible
            ],
        )


# --- the trigger request as the OpenAPI document describes it --------------------------


def _cron_field(atom: str) -> str:
    """A cron field of ``atom`` values: ``*``, values, ranges, lists, each with ``/step``."""
    part = f"(?:\\*|{atom}(?:-{atom})?)(?:/[1-9][0-9]{{0,2}})?"
    return f"{part}(?:,{part})*"


_MINUTE = "(?:[0-5]?[0-9])"
_HOUR = "(?:[01]?[0-9]|2[0-3])"
# Days 1-28 and the 1st-4th weekday: the documented cron always fires (the server also
# takes days 29-31 and #5 where a month has them).
_DAY = "(?:0?[1-9]|1[0-9]|2[0-8])"
_MONTH = "(?:0?[1-9]|1[0-2]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)"
_WEEKDAY = "(?:[1-7]|SUN|MON|TUE|WED|THU|FRI|SAT)"
_YEAR = "(?:19[7-9][0-9]|20[0-9][0-9]|21[0-9][0-9])"
_DAY_OF_MONTH = f"(?:{_cron_field(_DAY)}|L|LW|{_DAY}W)"
_DAY_OF_WEEK = f"(?:{_cron_field(_WEEKDAY)}|{_WEEKDAY}#[1-4]|{_WEEKDAY}L)"
_CRON = (
    f"cron\\({_cron_field(_MINUTE)} {_cron_field(_HOUR)} "
    f"(?:{_DAY_OF_MONTH} {_cron_field(_MONTH)} \\?|\\? {_cron_field(_MONTH)} {_DAY_OF_WEEK})"
    f" {_cron_field(_YEAR)}\\)"
)
# Ten years at most: 6 digits of minutes, 4 of hours, 3 of days stay below it.
_RATE = (
    "rate\\((?:1 (?:minute|hour|day)|(?:[2-9]|[1-9][0-9]{1,5}) minutes"
    "|(?:[2-9]|[1-9][0-9]{1,3}) hours|(?:[2-9]|[1-9][0-9]{1,2}) days)\\)"
)
SCHEDULE_PATTERN = f"^(?:{_RATE}|{_CRON})$"
"""``rate(…)`` and ``cron(…)`` with every field's values in range."""

TRIGGER_RULES = (
    "A schedule trigger has 'schedule' and no 'event_pattern'; an event trigger the other "
    "way round. Checked beyond the schema: a cron's ranges run forwards (the schema's "
    "cron takes days 1-28 and #1-#4, which always fire; the server also takes the others "
    "where some month has them); an event pattern nests at most 10 levels and is at most "
    "4096 characters as JSON, a numeric range's lower bound is below its upper one; 'inputs' "
    "gives every input the workflow requires and is at most 256 KiB as JSON."
)
_INPUT_PATH = "^\\$(?:\\.[A-Za-z0-9_-]+)+$"
_NOT_A_PATH = "^(?:[^$\\u0000][^\\u0000]*|\\$(?:[^.\\u0000][^\\u0000]*)?)?$"
_ref = "#/components/schemas/{}".format


def trigger_schemas() -> dict[str, dict[str, Any]]:
    """Components the trigger request refers to: event patterns and their matchers."""
    from llm_orchestrator.triggers.patterns import NUMERIC_LIMIT

    number = {"type": "number", "minimum": -NUMERIC_LIMIT, "maximum": NUMERIC_LIMIT}
    text = {"type": "string"}
    string_matcher = {
        "anyOf": [
            text,
            {
                "type": "object",
                "properties": {"equals-ignore-case": text},
                "required": ["equals-ignore-case"],
                "additionalProperties": False,
            },
        ]
    }

    def one(kind: str, operand: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {kind: operand},
            "required": [kind],
            "additionalProperties": False,
        }

    lower, upper = {"enum": [">", ">="]}, {"enum": ["<", "<="]}
    numeric = {
        "anyOf": [
            {
                "type": "array",
                "prefixItems": [{"enum": ["=", ">", ">=", "<", "<="]}, number],
                "minItems": 2,
                "maxItems": 2,
            },
            {
                "type": "array",
                "prefixItems": [lower, number, upper, number],
                "minItems": 4,
                "maxItems": 4,
            },
        ]
    }
    anything_but = {
        "anyOf": [
            text,
            number,
            {"type": "array", "minItems": 1, "items": {"anyOf": [text, number]}},
            one("prefix", text),
            one("suffix", text),
            one(
                "equals-ignore-case",
                {"anyOf": [text, {"type": "array", "minItems": 1, "items": text}]},
            ),
        ]
    }
    matcher = {
        "description": "A literal, or an object with exactly one matcher",
        "anyOf": [
            text,
            number,
            {"type": "boolean"},
            {"type": "null"},
            one("prefix", string_matcher),
            one("suffix", string_matcher),
            one("equals-ignore-case", text),
            one("wildcard", text),
            one("exists", {"type": "boolean"}),
            one("numeric", numeric),
            one("anything-but", anything_but),
        ],
    }
    pattern = {
        "description": "An EventBridge event pattern: leaves are arrays of matchers",
        "type": "object",
        "minProperties": 1,
        "properties": {
            "$or": {"type": "array", "minItems": 2, "items": {"$ref": _ref("EventPattern")}}
        },
        "additionalProperties": {
            "anyOf": [
                {"type": "array", "minItems": 1, "items": {"$ref": _ref("EventMatcher")}},
                {"$ref": _ref("EventPattern")},
            ]
        },
    }
    return {"EventPattern": pattern, "EventMatcher": matcher}


def _trigger_request_schema(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    properties["schedule"]["anyOf"][0]["pattern"] = SCHEDULE_PATTERN
    properties["event_pattern"]["anyOf"][0] = {"$ref": _ref("EventPattern")}
    properties["inputs"]["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "pattern": _INPUT_PATH},
            {"type": "string", "pattern": _NOT_A_PATH},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": {"$ref": _ref("JsonValue")}},
            {"type": "object", "additionalProperties": {"$ref": _ref("JsonValue")}},
        ]
    }
    schema["description"] = TRIGGER_RULES
    schema["oneOf"] = [
        {
            "properties": {
                "type": {"const": "schedule"},
                "schedule": {"not": {"type": "null"}},
                "event_pattern": {"type": "null"},
            },
            "required": ["schedule"],
        },
        {
            "properties": {
                "type": {"const": "event"},
                "event_pattern": {"not": {"type": "null"}},
                "schedule": {"type": "null"},
            },
            "required": ["event_pattern"],
        },
    ]
