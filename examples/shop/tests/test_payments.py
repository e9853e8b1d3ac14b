from decimal import Decimal

import pytest

from shop.cart import Cart
from shop.catalog import Product
from shop.payments import FakeProvider, PaymentDeclinedError, checkout

RATE = Decimal("0.075")


@pytest.fixture
def cart(mug: Product) -> Cart:
    cart = Cart()
    cart.add(mug, 2)
    return cart


def test_checkout_charges_order_total(cart: Cart) -> None:
    provider = FakeProvider()
    charge = checkout(cart, provider, "tok_ok", order_id="1001", tax_rate=RATE)
    assert charge.amount == Decimal("26.88")
    assert charge.currency == "EUR"
    assert list(provider.charges) == ["order-1001"]


def test_retrying_checkout_does_not_charge_twice(cart: Cart) -> None:
    provider = FakeProvider()
    first = checkout(cart, provider, "tok_ok", order_id="1002", tax_rate=RATE)
    second = checkout(cart, provider, "tok_ok", order_id="1002", tax_rate=RATE)
    assert first == second
    assert len(provider.charges) == 1


def test_declined_card(cart: Cart) -> None:
    provider = FakeProvider(declined_tokens={"tok_declined"})
    with pytest.raises(PaymentDeclinedError):
        checkout(cart, provider, "tok_declined", order_id="1003", tax_rate=RATE)
    assert provider.charges == {}


def test_empty_cart_cannot_check_out() -> None:
    with pytest.raises(ValueError, match="empty cart"):
        checkout(Cart(), FakeProvider(), "tok_ok", order_id="1004", tax_rate=RATE)
