"""Product catalogue: products, lookup by SKU and search."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal


class UnknownProductError(KeyError):
    """Raised when a SKU is not in the catalogue."""


@dataclass(frozen=True)
class Product:
    """A sellable item. ``price`` is the unit price, tax exclusive."""

    sku: str
    name: str
    price: Decimal
    tags: frozenset[str] = field(default_factory=frozenset)
    active: bool = True

    def __post_init__(self) -> None:
        if not self.sku:
            raise ValueError("sku must not be empty")
        if self.price < 0:
            raise ValueError(f"price must not be negative: {self.price}")


class Catalog:
    """An in-memory catalogue of products keyed by SKU."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._products: dict[str, Product] = {}
        for product in products:
            self.add(product)

    def __len__(self) -> int:
        return len(self._products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self._products.values())

    def __contains__(self, sku: object) -> bool:
        return sku in self._products

    def add(self, product: Product) -> None:
        """Add ``product``. Each SKU may only be added once."""
        if product.sku in self._products:
            raise ValueError(f"duplicate sku: {product.sku}")
        self._products[product.sku] = product

    def get(self, sku: str) -> Product:
        """Return the product with ``sku`` or raise :class:`UnknownProductError`."""
        try:
            return self._products[sku]
        except KeyError:
            raise UnknownProductError(sku) from None

    def search(self, query: str = "", *, tag: str | None = None) -> list[Product]:
        """Active products whose name contains ``query``, ignoring case, sorted by name.

        An empty query matches every active product. ``tag`` restricts the result to
        products carrying that tag.
        """
        needle = query.strip().casefold()
        hits = [
            product
            for product in self._products.values()
            if product.active
            and needle in product.name.casefold()
            and (tag is None or tag in product.tags)
        ]
        return sorted(hits, key=lambda product: (product.name.casefold(), product.sku))
