"""What every service shares: an HTTP server whose requests carry OpenTelemetry context in and
out. On receive, the W3C trace context and baggage are extracted and made current; on every
outgoing call they are injected again, so a routing key in the baggage follows a request
through the whole call graph without any service knowing about it."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

# A real tracer (the SDK's), so each request gets a server span whose children carry the same
# trace; spans are not exported anywhere, they only carry the context.
trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("mesh")

Json = dict[str, Any]
Route = Callable[[str, dict[str, str]], tuple[int, Json]]
"""(path, query) -> (status, body)."""


class UpstreamError(Exception):
    """A call to another service failed; the caller answers 502."""


def instance() -> str:
    """Which deployment of the service this is: harness sets `baseline` or a routing key."""
    return os.environ.get("HARNESS_INSTANCE", "local")


def call(base_url_variable: str, path: str) -> Json:
    """GET `path` from the service whose base URL is in $`base_url_variable`, with the current
    trace context and baggage injected into the request's headers."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    request = urllib.request.Request(os.environ[base_url_variable] + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: Json = json.load(response)
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"{base_url_variable}{path}: {exc}") from exc
    return body


def handler(service: str, route: Route) -> type[BaseHTTPRequestHandler]:
    """A request handler for `service` answering GETs with `route` (and /health itself)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            token = context.attach(propagate.extract(self.headers))
            try:
                with tracer.start_as_current_span(f"GET {service}", kind=trace.SpanKind.SERVER):
                    status, body = self._answer(url.path, query)
            finally:
                context.detach(token)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Json]:
            if path == "/health":
                return 200, {"service": service, "instance": instance()}
            try:
                return route(path, query)
            except UpstreamError as exc:
                return 502, {"error": str(exc)}

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request is noise in the service's log."""

    return Handler


class Server(ThreadingHTTPServer):
    # Requests arrive in bursts (many tests at once); past the default backlog of 5 the kernel
    # drops connections and clients retry only after a second.
    request_queue_size = 128
    daemon_threads = True


def serve(service: str, route: Route, port: int = 0) -> ThreadingHTTPServer:
    """A server for `service` on 127.0.0.1:`port` (0: any free port); not yet serving."""
    return Server(("127.0.0.1", port), handler(service, route))


def main(service: str, route: Route) -> None:
    server = serve(service, route, int(os.environ["PORT"]))
    print(f"{service} ({instance()}) listening on port {server.server_address[1]}", flush=True)
    server.serve_forever()
