from decimal import Decimal

import pytest

from shop.cart import MAX_QUANTITY, Cart
from shop.catalog import Product


def test_new_cart_is_empty() -> None:
    cart = Cart()
    assert cart.is_empty()
    assert cart.subtotal() == Decimal(0)
    assert cart.item_count() == 0


def test_adding_same_product_merges_lines(mug: Product) -> None:
    cart = Cart()
    cart.add(mug)
    line = cart.add(mug, 2)
    assert line.quantity == 3
    assert len(cart.lines) == 1


def test_subtotal_and_item_count(mug: Product, tea: Product) -> None:
    cart = Cart()
    cart.add(mug, 2)
    cart.add(tea, 3)
    assert cart.subtotal() == Decimal("51.25")
    assert cart.item_count() == 5


def test_lines_keep_insertion_order(mug: Product, tea: Product, teapot: Product) -> None:
    cart = Cart()
    cart.add(tea)
    cart.add(mug)
    cart.add(teapot)
    cart.set_quantity("TEA-03", 4)
    assert [line.product.sku for line in cart.lines] == ["TEA-03", "MUG-01", "POT-02"]


def test_set_quantity_zero_removes_line(mug: Product) -> None:
    cart = Cart()
    cart.add(mug)
    cart.set_quantity("MUG-01", 0)
    assert cart.is_empty()


def test_quantity_limits(mug: Product) -> None:
    cart = Cart()
    with pytest.raises(ValueError):
        cart.add(mug, 0)
    cart.add(mug, MAX_QUANTITY)
    with pytest.raises(ValueError):
        cart.add(mug)


def test_inactive_product_cannot_be_added(retired: Product) -> None:
    with pytest.raises(ValueError, match="not for sale"):
        Cart().add(retired)


def test_remove_is_idempotent(mug: Product) -> None:
    cart = Cart()
    cart.add(mug)
    cart.remove("MUG-01")
    cart.remove("MUG-01")
    assert cart.is_empty()
