"""Load and validate a state machine against the ASL subset of ``docs/asl.md``.

Anything outside the subset is refused here, with the path of the first offending field
(``/States/s/Retry/0/ErrorEquals``, in the style of Step Functions' own errors), so that a
definition that loads cannot fail at run time for being unsupported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from llm_orchestrator.engine.asl.model import (
    STATES_ALL,
    Catcher,
    ContextField,
    FailState,
    InputPath,
    JitterStrategy,
    Literal,
    ParallelState,
    PassState,
    PayloadNode,
    PayloadTemplate,
    Retrier,
    Scope,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    UnsupportedDefinition,
)

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN = "arn:aws:states:::lambda:invoke.waitForTaskToken"
ERROR_RESULT_PATH = "$.error"

_RESOURCES = {LAMBDA_INVOKE: False, LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN: True}
_MAX_SECONDS = 99_999_999
_MAX_DELAY_SECONDS = 31_622_401
_INPUT_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_CONTEXT_PATHS = {field.value: field for field in ContextField}

_TOP_FIELDS = ("Comment", "StartAt", "States", "TimeoutSeconds", "Version", "QueryLanguage")
_BRANCH_FIELDS = ("Comment", "StartAt", "States")
_COMMON_FIELDS = ("Type", "Comment", "QueryLanguage")
_STATE_FIELDS: dict[str, tuple[str, ...]] = {
    "Task": (
        *_COMMON_FIELDS,
        *("Resource", "Parameters", "ResultPath", "TimeoutSeconds", "Retry", "Catch"),
        *("Next", "End"),
    ),
    "Parallel": (*_COMMON_FIELDS, "Branches", "ResultPath", "Catch", "Next", "End"),
    "Pass": (*_COMMON_FIELDS, "Next", "End"),
    "Succeed": _COMMON_FIELDS,
    "Fail": (*_COMMON_FIELDS, "Error", "Cause"),
}
_RETRIER_FIELDS = (
    *("ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds"),
    *("JitterStrategy", "Comment"),
)
_CATCHER_FIELDS = ("ErrorEquals", "Next", "ResultPath", "Comment")


def load_state_machine(definition: Mapping[str, Any] | str) -> StateMachine:
    """Parse ``definition`` (a dict or its JSON text); raise :class:`UnsupportedDefinition`."""
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except ValueError as exc:
            raise UnsupportedDefinition("/", f"the definition is not valid JSON: {exc}") from exc
    return _Loader().machine(definition)


def _refuse(path: str, reason: str) -> NoReturn:
    raise UnsupportedDefinition(path, reason)


def _object(value: Any, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _refuse(path, f"{what} must be a JSON object")
    return value


def _fields(value: Mapping[str, Any], path: str, allowed: tuple[str, ...], what: str) -> None:
    for key in value:
        if key not in allowed:
            _refuse(f"{path}/{key}", f"field '{key}' is not supported on {what}")


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        _refuse(path, "must be a non-empty string")
    return value


def _integer(value: Any, path: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        _refuse(path, f"must be an integer from {minimum} to {maximum}")
    return value


def _query_language(owner: Mapping[str, Any], path: str) -> None:
    if "QueryLanguage" in owner and owner["QueryLanguage"] != "JSONPath":
        _refuse(f"{path}/QueryLanguage", "only the JSONPath query language is supported")


class _Loader:
    def __init__(self) -> None:
        # State names must be unique across the whole machine, branches included (AWS rule).
        self._defined_at: dict[str, str] = {}

    def machine(self, definition: Any) -> StateMachine:
        top = _object(definition, "/", "the definition")
        _fields(top, "", _TOP_FIELDS, "a state machine")
        comment = _string(top["Comment"], "/Comment") if "Comment" in top else None
        if "Version" in top and top["Version"] != "1.0":
            _refuse("/Version", 'Version must be "1.0"')
        _query_language(top, "")
        timeout = None
        if "TimeoutSeconds" in top:
            timeout = _integer(top["TimeoutSeconds"], "/TimeoutSeconds", 1, _MAX_SECONDS)
        return StateMachine(root=self._scope(top, ""), timeout_seconds=timeout, comment=comment)

    def _scope(self, owner: Mapping[str, Any], path: str) -> Scope:
        for required in ("StartAt", "States"):
            if required not in owner:
                _refuse(path or "/", f"field '{required}' is required")
        start_at = _string(owner["StartAt"], f"{path}/StartAt")
        raw_states = _object(owner["States"], f"{path}/States", "States")
        if not raw_states:
            _refuse(f"{path}/States", "States must name at least one state")
        if start_at not in raw_states:
            _refuse(f"{path}/StartAt", f"StartAt names a state that does not exist: '{start_at}'")
        names = frozenset(raw_states)
        states: dict[str, State] = {}
        for name, raw in raw_states.items():
            state_path = f"{path}/States/{name}"
            if name in self._defined_at:
                first = self._defined_at[name]
                _refuse(state_path, f"state name '{name}' is already used at {first}")
            self._defined_at[name] = state_path
            states[name] = self._state(name, raw, state_path, names)
        _check_graph(start_at, states, path)
        return Scope(start_at=start_at, states=states)

    def _state(self, name: str, raw: Any, path: str, names: frozenset[str]) -> State:
        if not name:
            _refuse(path, "state names must not be empty")
        spec = _object(raw, path, "a state")
        if "Type" not in spec:
            _refuse(path, "field 'Type' is required")
        kind = spec["Type"]
        if kind not in _STATE_FIELDS:
            supported = ", ".join(_STATE_FIELDS)
            _refuse(f"{path}/Type", f"state type {kind!r} is not supported (only {supported})")
        _fields(spec, path, _STATE_FIELDS[kind], f"a {kind} state")
        if "Comment" in spec:
            _string(spec["Comment"], f"{path}/Comment")
        _query_language(spec, path)
        if kind == "Succeed":
            return SucceedState(name)
        if kind == "Fail":
            error = _string(spec["Error"], f"{path}/Error") if "Error" in spec else None
            cause = _string(spec["Cause"], f"{path}/Cause") if "Cause" in spec else None
            return FailState(name, error, cause)
        following = _transition(spec, path, names)
        if kind == "Pass":
            return PassState(name, following)
        _result_path_null(spec, path)
        catch = _catchers(spec.get("Catch"), f"{path}/Catch", names)
        if kind == "Parallel":
            return ParallelState(name, self._branches(spec, path), catch, following)
        return _task(name, spec, path, catch, following)

    def _branches(self, spec: Mapping[str, Any], path: str) -> tuple[Scope, ...]:
        if "Branches" not in spec:
            _refuse(path, "field 'Branches' is required")
        raw = spec["Branches"]
        if not isinstance(raw, list) or not raw:
            _refuse(f"{path}/Branches", "Branches must be a non-empty array")
        branches = []
        for index, item in enumerate(raw):
            branch_path = f"{path}/Branches/{index}"
            branch = _object(item, branch_path, "a branch")
            _fields(branch, branch_path, _BRANCH_FIELDS, "a Parallel branch")
            branches.append(self._scope(branch, branch_path))
        return tuple(branches)


def _transition(spec: Mapping[str, Any], path: str, names: frozenset[str]) -> str | None:
    has_next, has_end = "Next" in spec, "End" in spec
    if has_next and has_end:
        _refuse(path, "a state has either Next or End, not both")
    if has_end:
        if spec["End"] is not True:
            _refuse(f"{path}/End", "End must be true")
        return None
    if not has_next:
        _refuse(path, "a state needs Next or End: true")
    return _target(spec["Next"], f"{path}/Next", names)


def _target(value: Any, path: str, names: frozenset[str]) -> str:
    target = _string(value, path)
    if target not in names:
        _refuse(path, f"Next names a state that does not exist here: '{target}'")
    return target


def _result_path_null(spec: Mapping[str, Any], path: str) -> None:
    # Omitting ResultPath means "$" (the result replaces the input), which would drop
    # execution_id; only the explicit null of docs/asl.md is in the subset.
    if "ResultPath" not in spec or spec["ResultPath"] is not None:
        _refuse(f"{path}/ResultPath", "ResultPath must be present and null")


def _task(
    name: str,
    spec: Mapping[str, Any],
    path: str,
    catch: tuple[Catcher, ...],
    following: str | None,
) -> TaskState:
    resource = spec.get("Resource")
    if resource not in _RESOURCES:
        _refuse(f"{path}/Resource", f"Resource must be one of {', '.join(_RESOURCES)}")
    wait = _RESOURCES[resource]
    if "Parameters" not in spec:
        _refuse(path, "field 'Parameters' is required")
    parameters = _object(spec["Parameters"], f"{path}/Parameters", "Parameters")
    _fields(parameters, f"{path}/Parameters", ("FunctionName", "Payload"), "Parameters")
    for required in ("FunctionName", "Payload"):
        if required not in parameters:
            _refuse(f"{path}/Parameters", f"field '{required}' is required")
    function_name = _string(parameters["FunctionName"], f"{path}/Parameters/FunctionName")
    payload_path = f"{path}/Parameters/Payload"
    payload = _payload(parameters["Payload"], payload_path, allow_token=wait)
    if wait and not payload.references(ContextField.TASK_TOKEN):
        _refuse(payload_path, "a .waitForTaskToken Task must pass $$.Task.Token in its Payload")
    timeout = None
    if "TimeoutSeconds" in spec:
        timeout = _integer(spec["TimeoutSeconds"], f"{path}/TimeoutSeconds", 1, _MAX_SECONDS)
    retry = _retriers(spec.get("Retry"), f"{path}/Retry")
    return TaskState(name, function_name, payload, wait, timeout, retry, catch, following)


def _payload(value: Any, path: str, *, allow_token: bool) -> PayloadTemplate:
    template = _object(value, path, "Payload")
    fields: list[tuple[str, PayloadNode]] = []
    for key, item in template.items():
        item_path = f"{path}/{key}"
        if not isinstance(key, str):
            _refuse(item_path, "object keys must be strings")
        if not key.endswith(".$"):
            if isinstance(item, Mapping):
                fields.append((key, _payload(item, item_path, allow_token=allow_token)))
            else:
                _check_literal(item, item_path)
                fields.append((key, Literal(item)))
            continue
        plain = key[:-2]
        if not plain:
            _refuse(item_path, "a '.$' key needs a name before the '.$'")
        if plain in template:
            _refuse(item_path, f"'{plain}' is given both as a value and as a path")
        fields.append((plain, _path(item, item_path, allow_token=allow_token)))
    return PayloadTemplate(tuple(fields))


def _path(value: Any, path: str, *, allow_token: bool) -> InputPath | ContextField:
    if not isinstance(value, str):
        _refuse(path, "the value of a '.$' key must be a path string")
    field = _CONTEXT_PATHS.get(value)
    if field is ContextField.TASK_TOKEN and not allow_token:
        _refuse(path, "$$.Task.Token exists only in a .waitForTaskToken Task")
    if field is not None:
        return field
    if _INPUT_PATH.fullmatch(value):
        return InputPath(value, tuple(value.split(".")[1:]))
    supported = ", ".join(_CONTEXT_PATHS)
    _refuse(path, f"unsupported path {value!r} (only $, $.a.b and {supported})")


def _check_literal(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_literal(item, f"{path}/{index}")
        return
    if isinstance(value, Mapping):
        # Paths inside arrays are not in the subset, so objects there must be plain JSON.
        for key, item in value.items():
            if not isinstance(key, str) or key.endswith(".$"):
                _refuse(f"{path}/{key}", "'.$' paths are not supported inside arrays")
            _check_literal(item, f"{path}/{key}")
        return
    _refuse(path, f"not a JSON value: {type(value).__name__}")


def _error_equals(entry: Mapping[str, Any], path: str, is_last: bool) -> tuple[str, ...]:
    if "ErrorEquals" not in entry:
        _refuse(path, "field 'ErrorEquals' is required")
    raw = entry["ErrorEquals"]
    if not isinstance(raw, list) or not raw:
        _refuse(f"{path}/ErrorEquals", "ErrorEquals must be a non-empty array")
    names = tuple(_string(name, f"{path}/ErrorEquals/{i}") for i, name in enumerate(raw))
    if STATES_ALL in names and (len(names) > 1 or not is_last):
        _refuse(f"{path}/ErrorEquals", "States.ALL must appear alone, in the last entry")
    return names


def _entries(value: Any, path: str, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        _refuse(path, f"{what} must be an array")
    return [_object(item, f"{path}/{i}", f"a {what} entry") for i, item in enumerate(value)]


def _retriers(value: Any, path: str) -> tuple[Retrier, ...]:
    entries = _entries(value, path, "Retry")
    return tuple(
        _retrier(entry, f"{path}/{index}", index == len(entries) - 1)
        for index, entry in enumerate(entries)
    )


def _retrier(entry: Mapping[str, Any], path: str, is_last: bool) -> Retrier:
    _fields(entry, path, _RETRIER_FIELDS, "a retrier")
    error_equals = _error_equals(entry, path, is_last)
    options: dict[str, Any] = {}
    if "IntervalSeconds" in entry:
        value = entry["IntervalSeconds"]
        options["interval_seconds"] = _integer(value, f"{path}/IntervalSeconds", 1, _MAX_SECONDS)
    if "MaxAttempts" in entry:
        value = entry["MaxAttempts"]
        options["max_attempts"] = _integer(value, f"{path}/MaxAttempts", 0, _MAX_SECONDS)
    if "BackoffRate" in entry:
        rate = entry["BackoffRate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate >= 1.0:
            _refuse(f"{path}/BackoffRate", "BackoffRate must be a number >= 1.0")
        options["backoff_rate"] = float(rate)
    if "MaxDelaySeconds" in entry:
        value = entry["MaxDelaySeconds"]
        options["max_delay_seconds"] = _integer(
            value, f"{path}/MaxDelaySeconds", 1, _MAX_DELAY_SECONDS
        )
    if "JitterStrategy" in entry:
        jitter = entry["JitterStrategy"]
        if jitter not in ("FULL", "NONE"):
            _refuse(f"{path}/JitterStrategy", 'JitterStrategy must be "FULL" or "NONE"')
        options["jitter"] = JitterStrategy(jitter)
    return Retrier(error_equals, **options)


def _catchers(value: Any, path: str, names: frozenset[str]) -> tuple[Catcher, ...]:
    entries = _entries(value, path, "Catch")
    catchers = []
    for index, entry in enumerate(entries):
        at = f"{path}/{index}"
        _fields(entry, at, _CATCHER_FIELDS, "a catcher")
        error_equals = _error_equals(entry, at, index == len(entries) - 1)
        if "Next" not in entry:
            _refuse(at, "field 'Next' is required")
        target = _target(entry["Next"], f"{at}/Next", names)
        if entry.get("ResultPath") != ERROR_RESULT_PATH:
            _refuse(f"{at}/ResultPath", f'a catcher\'s ResultPath must be "{ERROR_RESULT_PATH}"')
        catchers.append(Catcher(error_equals, target))
    return tuple(catchers)


def _check_graph(start_at: str, states: Mapping[str, State], path: str) -> None:
    reached = {start_at}
    frontier = [start_at]
    while frontier:
        for target in _successors(states[frontier.pop()]):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for name in states:
        if name not in reached:
            _refuse(f"{path}/States/{name}", f"state '{name}' is not reachable")
    if not any(_is_terminal(state) for state in states.values()):
        _refuse(f"{path}/States", "no state ends the machine or branch")


def _successors(state: State) -> list[str]:
    if isinstance(state, SucceedState | FailState):
        return []
    targets = [] if state.next is None else [state.next]
    if isinstance(state, TaskState | ParallelState):
        targets.extend(catcher.next for catcher in state.catch)
    return targets


def _is_terminal(state: State) -> bool:
    return isinstance(state, SucceedState | FailState) or state.next is None
