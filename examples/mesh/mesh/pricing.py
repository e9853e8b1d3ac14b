"""pricing: what a quantity of a product costs, in cents. The deepest service: catalog and
front both call it, and it calls nobody."""

from __future__ import annotations

from mesh.service import Json, instance, main

UNIT_CENTS = {"MUG": 1250, "TEA": 475, "PEN": 99}


def line_total(unit_cents: int, quantity: int) -> int:
    """The price of `quantity` units, in cents."""
    if quantity < 1:
        raise ValueError(f"quantity must be at least 1: {quantity}")
    return unit_cents * quantity


def route(path: str, query: dict[str, str]) -> tuple[int, Json]:
    sku = path.removeprefix("/prices/")
    if not path.startswith("/prices/") or sku not in UNIT_CENTS:
        return 404, {"error": f"no price for {path}"}
    try:
        quantity = int(query.get("qty", "1"))
        total = line_total(UNIT_CENTS[sku], quantity)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    return 200, {
        "sku": sku,
        "qty": quantity,
        "unit_cents": UNIT_CENTS[sku],
        "total_cents": total,
        "served_by": [f"pricing@{instance()}"],
    }


if __name__ == "__main__":
    main("pricing", route)
