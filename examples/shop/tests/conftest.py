"""Shared fixtures: a handful of products and a catalogue holding them."""

from decimal import Decimal

import pytest

from shop.catalog import Catalog, Product


@pytest.fixture
def mug() -> Product:
    return Product("MUG-01", "Enamel mug", Decimal("12.50"), frozenset({"kitchen"}))


@pytest.fixture
def teapot() -> Product:
    return Product("POT-02", "Cast-iron teapot", Decimal("39.90"), frozenset({"kitchen", "tea"}))


@pytest.fixture
def tea() -> Product:
    return Product("TEA-03", "Sencha green tea", Decimal("8.75"), frozenset({"tea"}))


@pytest.fixture
def retired() -> Product:
    return Product("OLD-04", "Chipped teacup", Decimal("3.00"), frozenset({"tea"}), active=False)


@pytest.fixture
def catalog(mug: Product, teapot: Product, tea: Product, retired: Product) -> Catalog:
    return Catalog([mug, teapot, tea, retired])
