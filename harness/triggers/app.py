"""The ASGI app `harness serve` runs on uvicorn (Starlette): one POST route per configured
source, `GET /healthz` (the process answers) and `GET /readyz` (the store answers).

The handler reads the body (refusing more than 25 MB as it streams), then hands the bytes to
the intake in a worker thread, so one slow database write never stalls the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from harness.triggers import MAX_BODY_BYTES
from harness.triggers.config import Source
from harness.triggers.intake import Intake

log = logging.getLogger("harness.serve")


def build_app(
    intake: Intake,
    ready: Callable[[], bool],
    on_start: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
) -> Starlette:
    routes = [
        Route(
            getattr(intake.mappings.triggers.config, name).path,
            _receiver(intake, name),
            methods=["POST"],
        )
        for name in intake.sources
    ]

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if await run_in_threadpool(ready):
            return PlainTextResponse("ready\n")
        return PlainTextResponse("the store does not answer\n", status_code=503)

    routes += [Route("/healthz", healthz), Route("/readyz", readyz)]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        on_start()
        try:
            yield
        finally:
            await run_in_threadpool(on_stop)

    life: Callable[[Starlette], AbstractAsyncContextManager[None]] = lifespan
    return Starlette(routes=routes, lifespan=life)


def _receiver(intake: Intake, source: Source) -> Callable[[Request], object]:
    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"message": f"body over {MAX_BODY_BYTES} bytes"}, 400)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"message": f"body over {MAX_BODY_BYTES} bytes"}, 400)
        receipt = await run_in_threadpool(intake.receive, source, request.headers, bytes(body))
        return JSONResponse(receipt.json(), status_code=receipt.status_code)

    return receive
