"""``limit``/``offset`` for every list endpoint: limit 1..100 (default 20), offset ≥ 0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Results per page")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, description="Results to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Page = Annotated[PageParams, Depends(page_params)]
