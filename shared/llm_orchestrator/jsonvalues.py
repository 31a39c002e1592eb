"""JSON numbers as request models read them: strict, with JSON's own idea of an integer.

Request models are strict (``"1"`` is not a number). JSON, though, has one number type:
``2.0`` and ``2`` are the same value, and JSON Schema calls both an integer, so a client
generated from our OpenAPI document may well send ``2.0`` for an integer field. A whole
number spelled with a fraction is therefore taken as that integer; ``2.5``, ``"2"`` and
``true`` are still refused.
"""

from __future__ import annotations

import types
from functools import cache
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["whole_numbers_as_integers"]


def whole_numbers_as_integers(model: type[BaseModel], data: Any) -> Any:
    """``data`` (a model's raw input) with whole floats of its integer fields made ints.

    For a ``model_validator(mode="before")``: each nested model converts its own fields.
    """
    if not isinstance(data, dict):
        return data
    names = _integer_fields(model)
    if not names.intersection(data):
        return data
    return {
        key: int(value)
        if key in names and isinstance(value, float) and value.is_integer()
        else value
        for key, value in data.items()
    }


@cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        if _is_integer(field.annotation):
            names.add(name)
            if field.alias:
                names.add(field.alias)
    return frozenset(names)


def _is_integer(annotation: Any) -> bool:
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return members == [int]
    return False
