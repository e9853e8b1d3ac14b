"""Shopping cart: line items and quantities."""

from dataclasses import dataclass
from decimal import Decimal

from shop.catalog import Product

MAX_QUANTITY = 99
"""Most units of one product a single cart may hold."""


@dataclass(frozen=True)
class LineItem:
    """One product in the cart and how many units of it."""

    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        """Price of the line before discounts and tax."""
        return self.product.price * self.quantity


class Cart:
    """A customer's cart. Lines keep the order in which products were first added."""

    def __init__(self) -> None:
        self._lines: dict[str, LineItem] = {}

    @property
    def lines(self) -> list[LineItem]:
        """The cart's lines, oldest first."""
        return list(self._lines.values())

    def add(self, product: Product, quantity: int = 1) -> LineItem:
        """Add ``quantity`` units of ``product``, merging with an existing line."""
        if quantity < 1:
            raise ValueError(f"quantity must be at least 1: {quantity}")
        if not product.active:
            raise ValueError(f"{product.sku} is not for sale")
        current = self._lines.get(product.sku)
        already = current.quantity if current is not None else 0
        return self._store(product, already + quantity)

    def set_quantity(self, sku: str, quantity: int) -> None:
        """Change the quantity of the line for ``sku``; zero removes the line."""
        line = self._lines.get(sku)
        if line is None:
            raise KeyError(sku)
        if quantity == 0:
            del self._lines[sku]
        else:
            self._store(line.product, quantity)

    def remove(self, sku: str) -> None:
        """Remove the line for ``sku`` if there is one."""
        self._lines.pop(sku, None)

    def item_count(self) -> int:
        """Total number of units across all lines."""
        return sum(line.quantity for line in self._lines.values())

    def subtotal(self) -> Decimal:
        """Sum of the line totals, before discounts and tax."""
        return sum((line.total for line in self._lines.values()), Decimal(0))

    def is_empty(self) -> bool:
        return not self._lines

    def _store(self, product: Product, quantity: int) -> LineItem:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity must be between 1 and {MAX_QUANTITY}: {quantity}")
        line = LineItem(product, quantity)
        self._lines[product.sku] = line
        return line
