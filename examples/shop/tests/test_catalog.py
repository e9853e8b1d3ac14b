from decimal import Decimal

import pytest

from shop.catalog import Catalog, Product, UnknownProductError


def test_get_returns_product_by_sku(catalog: Catalog, mug: Product) -> None:
    assert catalog.get("MUG-01") is mug
    assert "MUG-01" in catalog
    assert len(catalog) == 4


def test_get_unknown_sku_raises(catalog: Catalog) -> None:
    with pytest.raises(UnknownProductError):
        catalog.get("NOPE-99")


def test_duplicate_sku_is_rejected(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="duplicate sku"):
        catalog.add(Product("MUG-01", "Another mug", Decimal("1.00")))


def test_product_validates_fields() -> None:
    with pytest.raises(ValueError):
        Product("", "Nameless", Decimal("1.00"))
    with pytest.raises(ValueError):
        Product("NEG-01", "Negative", Decimal("-0.01"))


def test_search_is_case_insensitive_and_sorted(catalog: Catalog) -> None:
    assert [p.sku for p in catalog.search("TEA")] == ["POT-02", "TEA-03"]


def test_search_skips_inactive_products(catalog: Catalog) -> None:
    assert "OLD-04" not in [p.sku for p in catalog.search("tea")]


def test_search_by_tag(catalog: Catalog) -> None:
    assert [p.sku for p in catalog.search(tag="kitchen")] == ["POT-02", "MUG-01"]
    assert [p.sku for p in catalog.search("mug", tag="tea")] == []
