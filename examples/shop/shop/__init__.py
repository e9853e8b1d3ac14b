"""shop: a small online-shop library (the harness demo project)."""

from shop.cart import Cart, LineItem
from shop.catalog import Catalog, Product, UnknownProductError
from shop.pagination import Page, PageOutOfRangeError, clamp_page, page_count, paginate
from shop.payments import Charge, FakeProvider, PaymentDeclinedError, PaymentProvider, checkout
from shop.pricing import OrderTotals, apply_percentage, order_totals, tax_for, to_cents

__version__ = "0.3.0"

__all__ = [
    "Cart",
    "Catalog",
    "Charge",
    "FakeProvider",
    "LineItem",
    "OrderTotals",
    "Page",
    "PageOutOfRangeError",
    "PaymentDeclinedError",
    "PaymentProvider",
    "Product",
    "UnknownProductError",
    "apply_percentage",
    "checkout",
    "clamp_page",
    "order_totals",
    "page_count",
    "paginate",
    "tax_for",
    "to_cents",
]
