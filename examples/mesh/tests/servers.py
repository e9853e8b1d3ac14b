"""Servers started in-process for the unit tests, on free ports of 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mesh.service import Route, serve


@contextmanager
def running(service: str, route: Route) -> Iterator[str]:
    """A mesh service serving in a thread; yields its base URL."""
    server = serve(service, route)
    with _serving(server) as url:
        yield url


@contextmanager
def recording(answer: dict[str, Any]) -> Iterator[list[dict[str, str]]]:
    """A stub service answering every GET with `answer`; yields the headers it received (one
    dict per request, names lower-cased). Its URL is in the list's first entry's `url`."""
    seen: list[dict[str, str]] = []

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({name.lower(): value for name, value in self.headers.items()})
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), Stub)) as url:
        seen.append({"url": url})
        yield seen


@contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
