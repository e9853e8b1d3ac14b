"""catalog: a product's name and list price (asked of pricing)."""

from __future__ import annotations

from mesh.service import Json, call, instance, main

NAMES = {"MUG": "Enamel mug", "TEA": "Green tea, 100 g", "PEN": "Gel pen"}


def route(path: str, query: dict[str, str]) -> tuple[int, Json]:
    sku = path.removeprefix("/products/")
    if not path.startswith("/products/") or sku not in NAMES:
        return 404, {"error": f"no product at {path}"}
    price = call("PRICING_URL", f"/prices/{sku}?qty=1")
    return 200, {
        "sku": sku,
        "name": NAMES[sku],
        "unit_cents": price["unit_cents"],
        "served_by": [f"catalog@{instance()}", *price["served_by"]],
    }


if __name__ == "__main__":
    main("catalog", route)
