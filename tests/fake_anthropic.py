"""A fake Anthropic Messages API on 127.0.0.1, for driving the real `anthropic` SDK in tests.

The model's API is unreachable from the test machine, so harness's anthropic backend is tested
against this server. It speaks the real wire format (`POST /v1/messages`, the Message JSON,
Anthropic's error JSON, and the server-sent-event stream when the request says `"stream": true`)
and validates requests the way the real API does where that catches harness bugs: auth, the
required fields, role alternation, tool_use/tool_result pairing.

    with FakeMessagesServer(sequence(message([tool_use("read_file", {"path": "a.py"})]),
                                     message([text("done")], stop_reason="end_turn"))) as srv:
        client = anthropic.Anthropic(api_key="test-key", base_url=srv.base_url, max_retries=0)
        ...
        assert len(srv.requests) == 2

What a script is: `script(body, call_index) -> Reply`, called for every authenticated, admitted,
valid request; `call_index` counts those calls from 0 across the whole server. Build replies
with `message` (+ `text`, `tool_use`), `error`, `raw`; `delayed` makes any reply slow. Scripts
run on the server's request threads, so they must be thread-safe (`sequence` and
`ReplayScript` are). A script that raises becomes a 500 `api_error` carrying
`x-should-retry: false` (so the SDK does not retry it) and lands in `.script_errors`.

What the SDK sends (anthropic 2.12 over httpx2, checked against this server):

- `Anthropic(api_key=K)` sends `Authorization: Bearer K` and no `x-api-key` header;
  `Anthropic(auth_token=T)` sends `Authorization: Bearer T` too, so on the wire the two are
  the same. To send `x-api-key` with the SDK, pass
  `default_headers={"x-api-key": K, "Authorization": anthropic.Omit()}`. Every request
  carries `anthropic-version` (2026-10-21 in this SDK) and `x-stainless-retry-count`.
- `max_retries=0` disables the SDK's retries: a 529 is sent exactly once. With retries on,
  the SDK retries 408, 409, 429 and every 5xx (529 included) unless the response carries
  `x-should-retry: false`, honouring `retry-after-ms` / `retry-after`.
- 529 raises `anthropic.OverloadedError` (a subclass of `InternalServerError`), 429
  `RateLimitError`, 401 `AuthenticationError`, 400 `BadRequestError`, 404 `NotFoundError`,
  500 `InternalServerError`.

Concurrency accounting (`max_concurrent`): a request to `/v1/messages` that passed auth is
"offered"; it is "admitted" if, counting it, no more than `max_concurrent` admitted requests
are in flight, else it is answered 429 at once and counted in `.rejected_for_concurrency`.
`.peak_concurrency` is the peak number of *admitted* requests in flight (so with a limit it
never exceeds the limit; without one it is what the client actually ran at once), and
`.peak_offered_concurrency` the peak including the ones that got a 429: what the client
attempted. `latency_s` is slept by admitted requests, while counted in flight.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import yaml

# --- replies ---------------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]
ContentBlock = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True)
class MessageReply:
    """A 200 with a Message (or its event stream). `usage=None` estimates it from the request."""

    content: tuple[ContentBlock, ...]
    stop_reason: StopReason
    usage: Usage | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class ErrorReply:
    """An Anthropic error: `{"type":"error","error":{"type":..,"message":..},"request_id":..}`."""

    status: int
    type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class RawReply:
    """Exactly these bytes and headers (plus content-length), for malformed responses."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Reply = MessageReply | ErrorReply | RawReply
Script = Callable[[dict[str, Any], int], Reply]


def new_id(prefix: str) -> str:
    """An id like the API's: `msg_…`, `toolu_…`, `req_…` plus 24 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def text(s: str) -> ContentBlock:
    return {"type": "text", "text": s}


def tool_use(name: str, input: Mapping[str, Any], id: str | None = None) -> ContentBlock:
    return {"type": "tool_use", "id": id or new_id("toolu"), "name": name, "input": dict(input)}


def message(
    content: Sequence[ContentBlock] | str,
    stop_reason: StopReason | None = None,
    usage: Usage | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> MessageReply:
    """A Message reply. `stop_reason` defaults to "tool_use" if a tool_use block is present,
    else "end_turn"; the model in the JSON is the request's `model`."""
    blocks = (text(content),) if isinstance(content, str) else tuple(content)
    if stop_reason is None:
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    return MessageReply(blocks, stop_reason, usage, dict(headers or {}))


def error(
    status: int, type: str, message: str, headers: Mapping[str, str] | None = None
) -> ErrorReply:
    return ErrorReply(status, type, message, dict(headers or {}))


def raw(status: int, body_bytes: bytes, headers: Mapping[str, str] | None = None) -> RawReply:
    return RawReply(status, body_bytes, dict(headers or {}))


def delayed(reply: Reply, seconds: float) -> Reply:
    """The same reply, sent after `seconds` (for client timeout tests)."""
    return replace(reply, delay_s=seconds)


def overloaded(message: str = "Overloaded") -> ErrorReply:
    return error(529, "overloaded_error", message)


def rate_limited(retry_after_s: float = 1, *, ms: bool = False) -> ErrorReply:
    """A 429 with `retry-after` (seconds) or, with `ms=True`, `retry-after-ms`."""
    header = (
        {"retry-after-ms": str(int(retry_after_s * 1000))}
        if ms
        else {"retry-after": f"{retry_after_s:g}"}
    )
    return error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", header)


# --- scripts ---------------------------------------------------------------------------------


class ScriptExhausted(RuntimeError):
    """A `sequence` was asked for more replies than it has."""


def sequence(*replies: Reply, repeat_last: bool = False) -> Script:
    """Reply i for call i. Past the end: the last reply again with `repeat_last`, else
    `ScriptExhausted` (which the server turns into a non-retryable 500)."""
    if not replies:
        raise ValueError("sequence() needs at least one reply")

    def script(body: dict[str, Any], call_index: int) -> Reply:
        if call_index < len(replies):
            return replies[call_index]
        if repeat_last:
            return replies[-1]
        raise ScriptExhausted(f"script has {len(replies)} replies; call {call_index} is extra")

    return script


def shedding(script: Script, rate: float, seed: int = 0) -> Script:
    """`script`, except that a `rate` share of calls (seeded, so a run is repeatable) are shed
    with a 529 overloaded_error, as an API under load does."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def shed(body: dict[str, Any], call_index: int) -> Reply:
        with lock:
            drop = rng.random() < rate
        return overloaded() if drop else script(body, call_index)

    return shed


def answer_once(script: Script, reply: Reply, when: Callable[[dict[str, Any]], bool]) -> Script:
    """`script`, except that the first call whose body `when` picks is answered `reply`
    (e.g. one request told `retry-after: 3600`)."""
    lock = threading.Lock()
    done = False

    def once(body: dict[str, Any], call_index: int) -> Reply:
        nonlocal done
        with lock:
            fire = not done and when(body)
            done = done or fire
        return reply if fire else script(body, call_index)

    return once


def estimate_tokens(value: Any) -> int:
    """About four characters of JSON per token, at least 1."""
    return max(1, len(json.dumps(value, separators=(",", ":"))) // 4)


def block_text(content: Any) -> str:
    """The text of a message's content: a string, or the text blocks of a list, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


_SPEC_LINE = re.compile(r"^\s*spec:\s*(\S+)\s*$", re.MULTILINE)
_ATTEMPT_LINE = re.compile(r"^\s*attempt:\s*(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ReplayStep:
    tool: str
    args: dict[str, Any]


class ReplayScript:
    """Plays `<specs_dir>/<spec-id>.replay.yaml` trajectories through the wire format.

    The backend's contract: the first user message of an attempt's conversation has a line
    `spec: <spec-id>` and a line `attempt: <n>` (1-based; string or text-block content), and
    each attempt is a fresh conversation. The step index is the number of assistant messages
    already in `messages`. Each step is answered with a short text block and one tool_use block
    (name = the step's tool, input = its args), stop_reason "tool_use"; past the last step the
    answer is a text block with stop_reason "end_turn". An unknown spec or attempt, a missing
    `spec:`/`attempt:` line, or a step whose tool the request's `tools` do not define is a 400
    invalid_request_error saying so.

    Usage is deterministic and plausible, with the real meaning (the three input counts add up
    to about the request's JSON length / 4): the first call of a conversation writes the
    system prompt and tools to the cache (`cache_creation_input_tokens`); later calls read the
    earlier prefix from it (`cache_read_input_tokens` > 0) and write the last turn.
    """

    def __init__(self, specs_dir: Path, *, narrate: bool = True) -> None:
        self.specs_dir = Path(specs_dir)
        self.narrate = narrate
        self._cache: dict[str, list[list[ReplayStep]] | str] = {}
        self._lock = threading.Lock()

    def attempts(self, spec_id: str) -> list[list[ReplayStep]] | str:
        """The spec's attempts (lists of steps), or why they cannot be had (a message)."""
        with self._lock:
            if spec_id not in self._cache:
                self._cache[spec_id] = self._load(spec_id)
            return self._cache[spec_id]

    def _load(self, spec_id: str) -> list[list[ReplayStep]] | str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec_id):
            return f"replay: {spec_id!r} is not a spec id"
        path = self.specs_dir / f"{spec_id}.replay.yaml"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"replay: no replay trajectory for spec {spec_id!r} ({path.name})"
        except yaml.YAMLError as exc:
            return f"replay: {path.name} is not valid YAML: {' '.join(str(exc).split())}"
        attempts = data.get("attempts") if isinstance(data, dict) else None
        if not isinstance(attempts, list) or not attempts:
            return f"replay: {path.name} has no attempts"
        parsed: list[list[ReplayStep]] = []
        for a, attempt in enumerate(attempts, 1):
            steps = attempt.get("steps") if isinstance(attempt, dict) else None
            if not isinstance(steps, list) or not steps:
                return f"replay: {path.name} attempt {a} has no steps"
            parsed.append([])
            for s, step in enumerate(steps, 1):
                tool = step.get("tool") if isinstance(step, dict) else None
                args = step.get("args", {}) if isinstance(step, dict) else None
                if not isinstance(tool, str) or not isinstance(args, dict):
                    return f"replay: {path.name} attempt {a} step {s} needs tool (str), args (map)"
                parsed[-1].append(ReplayStep(tool, args))
        return parsed

    def __call__(self, body: dict[str, Any], call_index: int) -> Reply:
        messages: list[dict[str, Any]] = body["messages"]
        first = block_text(messages[0].get("content"))
        spec_match, attempt_match = _SPEC_LINE.search(first), _ATTEMPT_LINE.search(first)
        if spec_match is None or attempt_match is None:
            return _bad("replay: the first user message has no `spec: <id>` / `attempt: <n>` line")
        spec_id, number = spec_match.group(1), int(attempt_match.group(1))
        attempts = self.attempts(spec_id)
        if isinstance(attempts, str):
            return _bad(attempts)
        if not 1 <= number <= len(attempts):
            return _bad(
                f"replay: spec {spec_id!r} has no attempt {number} (it has {len(attempts)})"
            )
        steps = attempts[number - 1]
        index = sum(1 for m in messages if m.get("role") == "assistant")
        usage = self._usage(body, index)
        if index >= len(steps):
            done = f"Replay of {spec_id} attempt {number} is complete."
            return message([text(done)], "end_turn", replace(usage, output_tokens=12))
        step = steps[index]
        tools = body.get("tools")
        if isinstance(tools, list):
            names = {str(t.get("name")) for t in tools if isinstance(t, dict)}
            if step.tool not in names:
                return _bad(
                    f"replay: spec {spec_id!r} attempt {number} step {index + 1} calls "
                    f"{step.tool!r}, which the request's tools do not define ({sorted(names)})"
                )
        content: list[ContentBlock] = []
        if self.narrate:
            content.append(text(f"Step {index + 1}: {step.tool}."))
        content.append(tool_use(step.tool, step.args))
        output = 30 + estimate_tokens(step.args)
        return message(content, "tool_use", replace(usage, output_tokens=output))

    @staticmethod
    def _usage(body: dict[str, Any], index: int) -> Usage:
        total = estimate_tokens(body)
        messages = body["messages"]
        if index == 0:
            prefix = {k: body[k] for k in ("system", "tools") if k in body}
            creation = min(estimate_tokens(prefix), total - 1) if prefix else 0
            return Usage(total - creation, 50, cache_creation_input_tokens=creation)
        read = min(estimate_tokens({**body, "messages": messages[:-2]}), total - 1)
        creation = min(estimate_tokens(messages[-2:]), total - read - 1)
        return Usage(
            max(1, total - read - creation),
            50,
            cache_creation_input_tokens=max(0, creation),
            cache_read_input_tokens=read,
        )


def _bad(msg: str) -> ErrorReply:
    return error(400, "invalid_request_error", msg)


# --- request validation ----------------------------------------------------------------------

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def validate_body(body: Any) -> str | None:
    """Why the real API would refuse this body (a 400 message), or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required (a non-empty string)"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Field required (an integer)"
    if max_tokens < 1:
        return "max_tokens: must be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    if "system" in body and not isinstance(body["system"], str | list):
        return "system: Input should be a string or a list of text blocks"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return f"tools.{i}: Input should be an object"
            if tool.get("type", "custom") != "custom":
                continue  # server tools (web_search_…, bash_…) have their own shapes
            if not isinstance(tool.get("name"), str) or not _TOOL_NAME.match(tool["name"]):
                return f"tools.{i}.name: String should match pattern '{_TOOL_NAME.pattern}'"
            if not isinstance(tool.get("input_schema"), dict):
                return f"tools.{i}.input_schema: Field required"
    uses_tools = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i}: Input should be an object"
        role = msg.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            if i == 0:
                return 'messages: first message must use the "user" role'
            return f'messages: roles must alternate between "user" and "assistant" (messages.{i})'
        problem = _check_tool_pairing(messages, i)
        if problem:
            return problem
        content = msg.get("content")
        if isinstance(content, str):
            if not content and i != len(messages) - 1:
                return f"messages.{i}: all messages must have non-empty content"
            continue
        if not isinstance(content, list):
            return f"messages.{i}.content: Input should be a string or a list of content blocks"
        if not content and i != len(messages) - 1:
            return f"messages.{i}: all messages must have non-empty content"
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"messages.{i}.content.{j}: each content block needs a type"
            if block["type"] in ("tool_use", "tool_result"):
                uses_tools = True
            if block["type"] == "tool_use" and role != "assistant":
                return (
                    f"messages.{i}.content.{j}: tool_use blocks are only allowed in assistant turns"
                )
            if block["type"] == "tool_result" and role != "user":
                return (
                    f"messages.{i}.content.{j}: tool_result blocks are only allowed in user turns"
                )
    if uses_tools and not tools:
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


def _ids(content: Any, block_type: str, key: str) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == block_type]


def _check_tool_pairing(messages: list[dict[str, Any]], i: int) -> str | None:
    """Message i (a user turn after an assistant turn) must answer each of its tool_use ids
    with a tool_result, and its tool_results must refer to those ids only."""
    msg = messages[i]
    if msg["role"] != "user":
        return None
    results = _ids(msg.get("content"), "tool_result", "tool_use_id")
    previous = messages[i - 1].get("content") if i > 0 else None
    uses = _ids(previous, "tool_use", "id")
    unknown = [r for r in results if r not in uses]
    if unknown:
        return (
            f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{', '.join(unknown)}. Each `tool_result` block must have a corresponding `tool_use` "
            "block in the previous message."
        )
    missing = [u for u in uses if u not in results]
    if missing:
        return (
            f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
            "corresponding `tool_result` block in the next message."
        )
    return None


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. `headers` has lower-case names; `body` is the parsed
    JSON (None if it was not JSON); `auth` is "x-api-key", "bearer" or None (refused);
    `call_index` is set for requests the script answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    auth: str | None = None
    call_index: int | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    fake: FakeMessagesServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # http.server writes headers and body separately; with Nagle's algorithm the body
        # waits for the client's delayed ACK (40 ms on Linux): a stall no real API has.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._connection_opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        sent = {k.lower() for k in headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if "content-length" not in sent:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class FakeMessagesServer:
    """The fake Messages API; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        script: Script,
        *,
        api_key: str = "test-key",
        max_concurrent: int | None = None,
        latency_s: float = 0.0,
        concurrency_retry_after: str | None = "1",
    ) -> None:
        self.script = script
        self.api_key = api_key
        self.max_concurrent = max_concurrent
        self.latency_s = latency_s
        self.concurrency_retry_after = concurrency_retry_after
        """The `retry-after` of a 429 over `max_concurrent` (None: the header is left out)."""
        self.admitted_at: list[float] = []
        """time.time() of every admitted request, in order (for spread and rate checks)."""
        self.peak_concurrency = 0
        self.peak_offered_concurrency = 0
        self.rejected_for_concurrency = 0
        self._requests: list[RecordedRequest] = []
        self._script_errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._offered = 0
        self._calls = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("FakeMessagesServer is already running")
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end keep-alive connections the client still holds
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeMessagesServer is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- what happened --

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, in the order they were answered."""
        with self._lock:
            return list(self._requests)

    @property
    def script_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self._script_errors)

    @property
    def call_count(self) -> int:
        """How many requests the script has answered."""
        with self._lock:
            return self._calls

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    # -- serving --

    def _handle(self, handler: _Handler) -> None:
        method = handler.command
        path = handler.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in handler.headers.items()}
        raw_body = handler.read_body()
        try:
            body: Any = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None

        def answer(
            status: int,
            payload: bytes,
            out_headers: Mapping[str, str],
            auth: str | None = None,
            call_index: int | None = None,
        ) -> None:
            record = RecordedRequest(method, path, headers, body, status, auth, call_index)
            with self._lock:
                self._requests.append(record)
            # The slot is freed before the reply goes out: a client that sends its next
            # request the moment it reads this one must find the slot free, as with a server
            # that counts requests it is still working on.
            release()
            handler.send(status, payload, out_headers)

        released = False
        admitted = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released or not counted:
                    return
                released = True
                self._offered -= 1
                if admitted:
                    self._in_flight -= 1

        counted = False

        if method != "POST" or path != "/v1/messages":
            answer(*_error_response(404, "not_found_error", f"Not found: {method} {path}"))
            return
        auth = self._auth(headers)
        if auth is None:
            answer(*_error_response(401, "authentication_error", "invalid x-api-key"))
            return
        if not headers.get("anthropic-version"):
            msg = "anthropic-version: header is required"
            answer(*_error_response(400, "invalid_request_error", msg), auth)
            return

        with self._lock:
            counted = True
            self._offered += 1
            self.peak_offered_concurrency = max(self.peak_offered_concurrency, self._offered)
            admitted = self.max_concurrent is None or self._in_flight < self.max_concurrent
            if admitted:
                self._in_flight += 1
                self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
                self.admitted_at.append(time.time())
            else:
                self.rejected_for_concurrency += 1
        try:
            if not admitted:
                msg = "Number of concurrent connections has exceeded your rate limit"
                after = self.concurrency_retry_after
                headers = {"retry-after": after} if after is not None else {}
                limited = _error_response(429, "rate_limit_error", msg, headers)
                answer(*limited, auth)
                return
            self._serve_admitted(handler, raw_body, body, answer, auth)
        finally:
            release()

    def _serve_admitted(
        self,
        handler: _Handler,
        raw_body: bytes,
        body: Any,
        answer: Callable[..., None],
        auth: str,
    ) -> None:
        if self.latency_s > 0:
            threading.Event().wait(self.latency_s)
        if raw_body and body is None:
            msg = "There was an error parsing the body: not valid JSON"
            answer(*_error_response(400, "invalid_request_error", msg), auth)
            return
        problem = validate_body(body)
        if problem is not None:
            answer(*_error_response(400, "invalid_request_error", problem), auth)
            return
        with self._lock:
            call_index = self._calls
            self._calls += 1
        try:
            reply = self.script(body, call_index)
        except Exception as exc:
            with self._lock:
                self._script_errors.append(exc)
            msg = f"fake script raised {type(exc).__name__}: {exc}"
            response = _error_response(500, "api_error", msg, {"x-should-retry": "false"})
            answer(*response, auth, call_index)
            return
        if reply.delay_s > 0:
            threading.Event().wait(reply.delay_s)
        answer(*_render(reply, body), auth, call_index)

    def _auth(self, headers: Mapping[str, str]) -> str | None:
        if headers.get("x-api-key") == self.api_key:
            return "x-api-key"
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip() == self.api_key:
            return "bearer"
        return None


def _error_response(
    status: int, type_: str, msg: str, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    request_id = new_id("req")
    payload = {"type": "error", "error": {"type": type_, "message": msg}, "request_id": request_id}
    out = {"content-type": "application/json", "request-id": request_id, **(headers or {})}
    return status, json.dumps(payload).encode(), out


def _render(reply: Reply, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    if isinstance(reply, RawReply):
        return reply.status, reply.body, dict(reply.headers)
    if isinstance(reply, ErrorReply):
        return _error_response(reply.status, reply.type, reply.message, reply.headers)
    usage = reply.usage or Usage(estimate_tokens(body), estimate_tokens(list(reply.content)))
    request_id = new_id("req")
    msg: dict[str, Any] = {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [dict(b) for b in reply.content],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": usage.to_json(),
    }
    if body.get("stream") is True:
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        payload = _event_stream(msg)
    else:
        headers = {"content-type": "application/json"}
        payload = json.dumps(msg).encode()
    return 200, payload, {**headers, "request-id": request_id, **reply.headers}


def _event_stream(msg: dict[str, Any]) -> bytes:
    """The Message as the API streams it: message_start, a ping, per block start/deltas/stop,
    message_delta (stop_reason, output usage), message_stop."""
    events: list[tuple[str, dict[str, Any]]] = []
    start_usage = {**msg["usage"], "output_tokens": 1}
    start = {**msg, "content": [], "stop_reason": None, "usage": start_usage}
    events.append(("message_start", {"type": "message_start", "message": start}))
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(msg["content"]):
        deltas: list[dict[str, Any]] = []
        if block.get("type") == "text":
            opening: dict[str, Any] = {**block, "text": ""}
            s = str(block.get("text", ""))
            half = len(s) // 2
            deltas = [{"type": "text_delta", "text": part} for part in (s[:half], s[half:]) if part]
        elif block.get("type") == "tool_use":
            opening = {**block, "input": {}}
            js = json.dumps(block.get("input", {}))
            half = len(js) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in (js[:half], js[half:])
            ]
        else:
            opening = block
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": msg["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


__all__ = [
    "ContentBlock",
    "ErrorReply",
    "FakeMessagesServer",
    "MessageReply",
    "RawReply",
    "RecordedRequest",
    "ReplayScript",
    "ReplayStep",
    "Reply",
    "Script",
    "ScriptExhausted",
    "Usage",
    "block_text",
    "delayed",
    "error",
    "estimate_tokens",
    "message",
    "new_id",
    "overloaded",
    "rate_limited",
    "raw",
    "sequence",
    "text",
    "tool_use",
    "validate_body",
]
