"""Shapes shared by every group: the error envelope and paginated lists."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from llm_orchestrator.jsonvalues import whole_numbers_as_integers


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, never silently dropped, and values must
    have their JSON type (``"1"`` is not a number, ``1`` is not a string; ``2.0`` is the
    integer 2, as JSON has it)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        return whole_numbers_as_integers(cls, data)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str


class PageMeta(BaseModel):
    total: int
    limit: int
    offset: int


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Validation error",
        401: "Missing or invalid credentials",
        403: "Missing permission",
        404: "Not found",
        409: "Conflict",
        429: "Rate limited",
    }.items()
}
