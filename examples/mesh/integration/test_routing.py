"""Requests carrying the routing key reach this task's sandboxed services, wherever they sit in
the call graph; concurrent requests without it are answered by the baseline alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from mesh_client import Mesh


def test_keyed_and_plain_requests_at_once_each_reach_their_own_instances(mesh: Mesh) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keyed = [pool.submit(mesh.get, "/quote/MUG?qty=2", keyed=True) for _ in range(4)]
        plain = [pool.submit(mesh.get, "/quote/MUG?qty=2", keyed=False) for _ in range(4)]
        answers = [(future.result(), True) for future in keyed]
        answers += [(future.result(), False) for future in plain]
    for quote, with_key in answers:
        # front, then catalog and the pricing it called, then pricing called by front.
        services = [hop.split("@")[0] for hop in quote["served_by"]]
        assert services == ["front", "catalog", "pricing", "pricing"]
        for hop in quote["served_by"]:
            service, instance = hop.split("@")
            assert instance == mesh.expected_instance(service, keyed=with_key), quote


def test_a_quote_names_the_product_and_prices_it(mesh: Mesh) -> None:
    quote = mesh.get("/quote/TEA?qty=1", keyed=True)
    assert quote["name"] == "Green tea, 100 g"
    assert quote["total_cents"] == quote["unit_cents"] == 475
