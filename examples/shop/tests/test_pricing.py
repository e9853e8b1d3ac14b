from decimal import Decimal

import pytest

from shop.cart import Cart
from shop.catalog import Product
from shop.pricing import apply_percentage, order_totals, tax_for, to_cents

RATE = Decimal("0.075")


def test_to_cents_rounds_half_up() -> None:
    assert to_cents(Decimal("0.125")) == Decimal("0.13")
    assert to_cents(Decimal("0.124")) == Decimal("0.12")
    assert to_cents(Decimal("7")) == Decimal("7.00")


def test_apply_percentage() -> None:
    assert apply_percentage(Decimal("80.00"), Decimal(25)) == Decimal("60.00")
    assert apply_percentage(Decimal("9.99"), Decimal(10)) == Decimal("8.99")
    with pytest.raises(ValueError):
        apply_percentage(Decimal("1.00"), Decimal(101))


def test_tax_for_cart(mug: Product, tea: Product) -> None:
    cart = Cart()
    cart.add(mug, 2)
    cart.add(tea)
    assert tax_for(cart, RATE) == Decimal("2.53")


def test_tax_is_rounded_once_on_the_subtotal() -> None:
    cart = Cart()
    for sku in ("PIN-1", "PIN-2", "PIN-3"):
        cart.add(Product(sku, f"Badge {sku}", Decimal("0.10")))
    assert tax_for(cart, RATE) == Decimal("0.02")


def test_negative_tax_rate_is_rejected() -> None:
    with pytest.raises(ValueError):
        tax_for(Cart(), Decimal("-0.1"))


def test_order_totals(mug: Product, teapot: Product) -> None:
    cart = Cart()
    cart.add(mug)
    cart.add(teapot)
    totals = order_totals(cart, RATE)
    assert totals.subtotal == Decimal("52.40")
    assert totals.tax == Decimal("3.93")
    assert totals.total == Decimal("56.33")
