"""Taking payment for an order through a payment provider."""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from shop.cart import Cart
from shop.pricing import order_totals


class PaymentDeclinedError(Exception):
    """The provider refused the charge."""


@dataclass(frozen=True)
class Charge:
    """A successful charge, as recorded by the provider."""

    reference: str
    amount: Decimal
    currency: str


class PaymentProvider(Protocol):
    """What the shop needs from a card payment provider."""

    def charge(
        self, amount: Decimal, currency: str, token: str, *, idempotency_key: str
    ) -> Charge: ...


@dataclass
class FakeProvider:
    """In-memory provider for tests and local development.

    Tokens listed in ``declined_tokens`` are refused. Repeating a charge with the same
    idempotency key returns the original charge instead of charging twice.
    """

    declined_tokens: set[str] = field(default_factory=set)
    charges: dict[str, Charge] = field(default_factory=dict)

    def charge(self, amount: Decimal, currency: str, token: str, *, idempotency_key: str) -> Charge:
        if idempotency_key in self.charges:
            return self.charges[idempotency_key]
        if token in self.declined_tokens:
            raise PaymentDeclinedError(f"card declined for token {token}")
        result = Charge(f"fake_{len(self.charges) + 1}", amount, currency)
        self.charges[idempotency_key] = result
        return result


def checkout(
    cart: Cart,
    provider: PaymentProvider,
    token: str,
    *,
    order_id: str,
    tax_rate: Decimal,
    currency: str = "EUR",
) -> Charge:
    """Charge the customer for ``cart``; safe to retry with the same ``order_id``."""
    if cart.is_empty():
        raise ValueError("cannot check out an empty cart")
    totals = order_totals(cart, tax_rate)
    return provider.charge(totals.total, currency, token, idempotency_key=f"order-{order_id}")
