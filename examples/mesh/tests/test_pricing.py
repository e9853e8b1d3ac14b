import pytest

from mesh.pricing import UNIT_CENTS, line_total, route


def test_line_total_is_unit_price_times_quantity() -> None:
    assert line_total(1250, 1) == 1250
    assert line_total(99, 3) == 297


def test_line_total_rejects_no_units() -> None:
    with pytest.raises(ValueError):
        line_total(1250, 0)


def test_route_prices_a_known_product() -> None:
    status, body = route("/prices/MUG", {"qty": "2"})
    assert status == 200
    assert (body["sku"], body["qty"], body["unit_cents"]) == ("MUG", 2, UNIT_CENTS["MUG"])
    assert body["total_cents"] == 2 * UNIT_CENTS["MUG"]
    assert body["served_by"] == ["pricing@local"]


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [("/prices/NOPE", {}, 404), ("/elsewhere", {}, 404), ("/prices/MUG", {"qty": "x"}, 400)],
)
def test_route_refuses_bad_requests(path: str, query: dict[str, str], status: int) -> None:
    assert route(path, query)[0] == status
