"""front: a quote for a quantity of a product, from catalog (what it is) and pricing (what the
quantity costs). `served_by` lists every instance that took part, in call order."""

from __future__ import annotations

from mesh.service import Json, call, instance, main


def route(path: str, query: dict[str, str]) -> tuple[int, Json]:
    if not path.startswith("/quote/"):
        return 404, {"error": f"nothing at {path}"}
    sku = path.removeprefix("/quote/")
    quantity = query.get("qty", "1")
    if not quantity.isdigit():
        return 400, {"error": f"qty must be a whole number: {quantity!r}"}
    product = call("CATALOG_URL", f"/products/{sku}")
    price = call("PRICING_URL", f"/prices/{sku}?qty={quantity}")
    return 200, {
        "sku": sku,
        "name": product["name"],
        "qty": price["qty"],
        "unit_cents": price["unit_cents"],
        "total_cents": price["total_cents"],
        "served_by": [f"front@{instance()}", *product["served_by"], *price["served_by"]],
    }


if __name__ == "__main__":
    main("front", route)
