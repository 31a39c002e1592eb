"""``limit``/``offset`` for every list endpoint: limit 1..100 (default 20), offset 0..2⁶³-1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# PostgreSQL's OFFSET is a bigint; anything larger would fail in the database, not here.
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


async def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Results per page")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Results to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Page = Annotated[PageParams, Depends(page_params)]
