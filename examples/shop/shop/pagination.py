"""Splitting product listings into numbered pages."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_PER_PAGE = 24


class PageOutOfRangeError(ValueError):
    """Raised when a page number is outside ``1..page_count(...)``."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing. ``number`` is 1-based; ``total`` counts the whole listing."""

    items: list[T]
    number: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return page_count(self.total, self.per_page)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_count(total: int, per_page: int) -> int:
    """Number of pages needed to show ``total`` items, ``per_page`` to a page.

    An empty listing still has one (empty) page, so page 1 always exists.
    """
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1: {per_page}")
    if total < 0:
        raise ValueError(f"total must not be negative: {total}")
    return total // per_page + 1


def clamp_page(page: int, total: int, per_page: int) -> int:
    """Clamp a user-supplied page number into the valid range for the listing."""
    return min(max(page, 1), page_count(total, per_page))


def paginate(items: Sequence[T], page: int, per_page: int = DEFAULT_PER_PAGE) -> Page[T]:
    """Return page number ``page`` (1-based) of ``items``."""
    pages = page_count(len(items), per_page)
    if not 1 <= page <= pages:
        raise PageOutOfRangeError(f"page {page} is outside 1..{pages}")
    start = (page - 1) * per_page
    return Page(
        items=list(items[start : start + per_page]),
        number=page,
        per_page=per_page,
        total=len(items),
    )
