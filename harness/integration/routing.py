"""The routing layer: an HTTP reverse proxy on 127.0.0.1 in front of each baseline service.

A request whose baggage (or tracestate) carries a registered sandbox's routing key goes to that
sandbox's instance of the service, when the sandbox runs one; every other request goes to the
baseline. Services are configured to call each other through these listeners, so a key
forwarded by a baseline service still reaches a sandboxed service deeper in the call graph.
Sandboxes register and unregister their routes at run time, from any thread.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType

from harness.integration.routing_key import key_from_headers

ROUTE_HEADER = "X-Harness-Route"
"""Added to every proxied response: `baseline`, or `sandbox <routing key>`."""
UPSTREAM_TIMEOUT_S = 300.0
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _Listener(ThreadingHTTPServer):
    # Many tasks' integration tests hit one listener at once; the default backlog (5) drops
    # connections under that burst.
    request_queue_size = 256
    daemon_threads = True

    def __init__(self, layer: RoutingLayer, service: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.layer = layer
        self.service = service


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive from clients; every reply has a Content-Length
    timeout = 60  # an idle keep-alive connection frees its thread after this
    server: _Listener

    def do_GET(self) -> None:
        self._forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request on harness's stderr would drown the run's output."""

    def _forward(self) -> None:
        layer, service = self.server.layer, self.server.service
        key = key_from_headers(self.headers, layer.baggage_key)
        port, route = layer.target(service, key)
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(411, route, b"routing layer: send a Content-Length, not a chunked body\n")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if port is None:
            self._reply(503, route, f"routing layer: {service} has no baseline yet\n".encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        except OSError as exc:
            message = f"routing layer: {service} ({route}, port {port}) unreachable: {exc}\n"
            self._reply(502, route, message.encode())
            return
        finally:
            upstream.close()
        passed = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        self._reply(response.status, route, payload, passed, reason=response.reason)

    def _reply(
        self,
        status: int,
        route: str,
        payload: bytes,
        headers: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        self.send_response(status, reason)
        for name, value in headers or [("Content-Type", "text/plain; charset=utf-8")]:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header(ROUTE_HEADER, route)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class RoutingLayer:
    """One listener per service; routes per sandbox, changed atomically under a lock."""

    def __init__(self, baggage_key: str) -> None:
        self.baggage_key = baggage_key
        self._lock = threading.Lock()
        self._listeners: dict[str, _Listener] = {}
        self._threads: list[threading.Thread] = []
        self._baseline: dict[str, int] = {}
        self._routes: MappingProxyType[str, dict[str, int]] = MappingProxyType({})

    def add_service(self, name: str) -> str:
        """Start the listener for `name`; returns its base URL (before the baseline is up:
        services are told each other's URLs when they start)."""
        listener = _Listener(self, name)
        thread = threading.Thread(
            # A short poll: close() waits for each listener's loop to notice the shutdown.
            target=listener.serve_forever,
            args=(0.05,),
            name=f"routing-{name}",
            daemon=True,
        )
        thread.start()
        with self._lock:
            self._listeners[name] = listener
            self._threads.append(thread)
        return self.url(name)

    def url(self, name: str) -> str:
        host, port = self._listeners[name].server_address[:2]
        return f"http://{host!s}:{port}"

    def set_baseline(self, name: str, port: int) -> None:
        with self._lock:
            self._baseline[name] = port

    def register(self, key: str, ports: dict[str, int]) -> None:
        """Route `key`'s requests for these services to these ports (replacing its routes)."""
        unknown = sorted(set(ports) - set(self._listeners))
        if unknown:
            raise KeyError(f"no listener for service(s) {', '.join(unknown)}")
        with self._lock:
            # Copy on write: request threads read the mapping without taking the lock.
            self._routes = MappingProxyType({**self._routes, key: dict(ports)})

    def unregister(self, key: str) -> None:
        with self._lock:
            routes = dict(self._routes)
            routes.pop(key, None)
            self._routes = MappingProxyType(routes)

    def target(self, service: str, key: str | None) -> tuple[int | None, str]:
        """The port a request for `service` carrying `key` goes to, and the route's name."""
        sandbox = self._routes.get(key, {}) if key else {}
        if service in sandbox:
            return sandbox[service], f"sandbox {key}"
        return self._baseline.get(service), "baseline"

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
            threads, self._threads = self._threads, []
        for listener in listeners:
            listener.shutdown()
            listener.server_close()
        for thread in threads:
            thread.join(timeout=5)
