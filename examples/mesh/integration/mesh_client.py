"""What harness's integration gate hands the tests: the routing layer's URLs, the routing key,
the headers that carry it, and which services run in this task's sandbox."""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mesh:
    front: str
    """The routing layer's URL in front of the front service."""
    key: str
    headers: dict[str, str]
    """The routing key as W3C baggage and tracestate (with its traceparent)."""
    sandboxed: frozenset[str]

    @classmethod
    def from_environment(cls) -> Mesh:
        return cls(
            front=os.environ["HARNESS_URL_FRONT"],
            key=os.environ["HARNESS_ROUTING_KEY"],
            headers={
                "baggage": os.environ["HARNESS_BAGGAGE"],
                "traceparent": os.environ["HARNESS_TRACEPARENT"],
                "tracestate": os.environ["HARNESS_TRACESTATE"],
            },
            sandboxed=frozenset(filter(None, os.environ["HARNESS_SANDBOXED"].split(","))),
        )

    def get(self, path: str, *, keyed: bool) -> dict[str, Any]:
        """GET from front, with the routing key's headers or without any."""
        request = urllib.request.Request(self.front + path, headers=self.headers if keyed else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.load(response)
        return body

    def expected_instance(self, service: str, *, keyed: bool) -> str:
        """Who must answer for `service`: this sandbox for keyed requests to its services."""
        return self.key if keyed and service in self.sandboxed else "baseline"
