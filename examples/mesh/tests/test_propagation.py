"""The services pass W3C trace context and baggage on to the services they call."""

import json
import urllib.request

import pytest
from servers import recording, running

from mesh import catalog, front, pricing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = {
    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    "tracestate": "harness=key-1",
    "baggage": "harness-routing-key=key-1,other=x",
}


def get(url: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, object] = json.load(response)
    return body


def test_catalog_forwards_baggage_and_trace_context(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"unit_cents": 1250, "served_by": ["pricing@stub"]}
    with recording(answer) as seen, running("catalog", catalog.route) as catalog_url:
        monkeypatch.setenv("PRICING_URL", seen[0]["url"])
        body = get(f"{catalog_url}/products/MUG", INCOMING)
    assert body["served_by"] == ["catalog@local", "pricing@stub"]
    [forwarded] = seen[1:]
    assert "harness-routing-key=key-1" in forwarded["baggage"]
    assert "other=x" in forwarded["baggage"]
    assert forwarded["tracestate"] == "harness=key-1"
    # The same trace, continued from catalog's own span (a new parent id).
    version, trace_id, parent, _flags = forwarded["traceparent"].split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    assert parent != "00f067aa0ba902b7"


def test_a_request_without_baggage_forwards_none(monkeypatch: pytest.MonkeyPatch) -> None:
    with recording({"unit_cents": 1, "served_by": []}) as seen:
        with running("catalog", catalog.route) as catalog_url:
            monkeypatch.setenv("PRICING_URL", seen[0]["url"])
            get(f"{catalog_url}/products/MUG")
    assert "baggage" not in seen[1]


def test_front_quotes_through_catalog_and_pricing(monkeypatch: pytest.MonkeyPatch) -> None:
    with running("pricing", pricing.route) as pricing_url:
        monkeypatch.setenv("PRICING_URL", pricing_url)
        with running("catalog", catalog.route) as catalog_url:
            monkeypatch.setenv("CATALOG_URL", catalog_url)
            with running("front", front.route) as front_url:
                quote = get(f"{front_url}/quote/TEA?qty=3")
    assert quote["name"] == "Green tea, 100 g"
    assert (quote["qty"], quote["unit_cents"], quote["total_cents"]) == (3, 475, 1425)
    assert quote["served_by"] == ["front@local", "catalog@local", "pricing@local", "pricing@local"]


def test_health_names_the_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_INSTANCE", "baseline")
    with running("pricing", pricing.route) as url:
        assert get(f"{url}/health") == {"service": "pricing", "instance": "baseline"}
