"""Money arithmetic: rounding to cents, percentage discounts, tax and order totals."""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from shop.cart import Cart

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> Decimal:
    """Round ``amount`` to whole cents, halves rounded up (away from zero)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def apply_percentage(amount: Decimal, percent: Decimal) -> Decimal:
    """Return ``amount`` reduced by ``percent`` per cent, rounded to cents."""
    if not Decimal(0) <= percent <= Decimal(100):
        raise ValueError(f"percent must be between 0 and 100: {percent}")
    return to_cents(amount * (Decimal(100) - percent) / Decimal(100))


def tax_for(cart: Cart, rate: Decimal) -> Decimal:
    """Tax owed on ``cart`` at ``rate`` (e.g. ``Decimal("0.075")`` for 7.5%).

    Tax is computed on the cart subtotal and rounded once, half-up to the cent.
    """
    if rate < 0:
        raise ValueError(f"tax rate must not be negative: {rate}")
    return to_cents(cart.subtotal() * rate)


@dataclass(frozen=True)
class OrderTotals:
    """What the customer pays, as shown at checkout."""

    subtotal: Decimal
    tax: Decimal
    total: Decimal


def order_totals(cart: Cart, tax_rate: Decimal) -> OrderTotals:
    """Subtotal, tax and grand total for ``cart`` at ``tax_rate``."""
    subtotal = to_cents(cart.subtotal())
    tax = tax_for(cart, tax_rate)
    return OrderTotals(subtotal=subtotal, tax=tax, total=subtotal + tax)
