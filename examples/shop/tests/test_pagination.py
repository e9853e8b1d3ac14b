import pytest

from shop.pagination import PageOutOfRangeError, clamp_page, page_count, paginate

ITEMS = list(range(1, 26))  # 25 items


def test_page_count_rounds_up_partial_pages() -> None:
    assert page_count(25, 10) == 3
    assert page_count(5, 10) == 1


def test_empty_listing_has_one_page() -> None:
    assert page_count(0, 10) == 1


def test_page_count_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        page_count(10, 0)
    with pytest.raises(ValueError):
        page_count(-1, 10)


def test_first_page() -> None:
    page = paginate(ITEMS, 1, per_page=10)
    assert page.items == list(range(1, 11))
    assert page.pages == 3
    assert not page.has_previous
    assert page.has_next


def test_last_partial_page() -> None:
    page = paginate(ITEMS, 3, per_page=10)
    assert page.items == [21, 22, 23, 24, 25]
    assert page.has_previous
    assert not page.has_next


def test_out_of_range_page_raises() -> None:
    with pytest.raises(PageOutOfRangeError):
        paginate(ITEMS, 4, per_page=10)
    with pytest.raises(PageOutOfRangeError):
        paginate(ITEMS, 0, per_page=10)


def test_clamp_page() -> None:
    assert clamp_page(-3, 25, 10) == 1
    assert clamp_page(2, 25, 10) == 2
    assert clamp_page(99, 25, 10) == 3
    assert clamp_page(5, 0, 10) == 1
