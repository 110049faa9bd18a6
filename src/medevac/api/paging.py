"""Pagination of the /v1 list routes: ``limit`` (at most 1000) and ``offset``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Query

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """Which slice of a newest-first list the caller asked for."""

    limit: int
    offset: int

    def of(self, items: list[T]) -> list[T]:
        """This page of a whole list."""
        return items[self.offset : self.offset + self.limit]


def _page(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = 100,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="skip this many (the next page)")
    ] = 0,
) -> Page:
    return Page(limit, offset)


Paged = Annotated[Page, Depends(_page)]
