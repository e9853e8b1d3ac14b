"""The fake Messages API, driven by the real anthropic SDK (2.12, over httpx2).

What these tests pin down about the SDK (see also fake_anthropic's docstring):

- `Anthropic(api_key=K)` sends `Authorization: Bearer K` (no `x-api-key` header), and
  `Anthropic(auth_token=T)` sends `Authorization: Bearer T`: the two are identical on the
  wire. `x-api-key` is only sent when given as a header, e.g.
  `default_headers={"x-api-key": K, "Authorization": anthropic.Omit()}`.
- `max_retries=0` disables retries: a 529 reaches the server exactly once. With retries on,
  a 529 is retried (honouring `retry-after-ms`), and `x-should-retry: false` stops it.
- 529 raises `anthropic.OverloadedError`, a subclass of `anthropic.InternalServerError`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import yaml
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock
from fake_anthropic import (
    FakeMessagesServer,
    ReplayScript,
    ScriptExhausted,
    Usage,
    delayed,
    error,
    message,
    overloaded,
    rate_limited,
    raw,
    sequence,
    text,
    tool_use,
)

KEY = "test-key"
MODEL = "claude-fake-1"
REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL_NAMES = ("list_files", "read_file", "search", "write_file", "edit_file", "run", "finish")
TOOLS: list[ToolParam] = [
    {"name": name, "description": name, "input_schema": {"type": "object"}} for name in TOOL_NAMES
]
HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _no_ambient_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)


def make_client(server: FakeMessagesServer, **kwargs: Any) -> anthropic.Anthropic:
    options: dict[str, Any] = {"api_key": KEY, "max_retries": 0, "timeout": 10.0, **kwargs}
    if "auth_token" in kwargs and "api_key" not in kwargs:
        del options["api_key"]
    return anthropic.Anthropic(base_url=server.base_url, **options)


def create(client: anthropic.Anthropic, messages: list[MessageParam] = HELLO) -> Message:
    return client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=TOOLS)


@pytest.fixture
def fake() -> Iterator[FakeMessagesServer]:
    reply = message([text("Reading it."), tool_use("read_file", {"path": "a.py"})])
    with FakeMessagesServer(sequence(reply, repeat_last=True), api_key=KEY) as server:
        yield server


# --- messages --------------------------------------------------------------------------------


def test_create_returns_a_parsed_message_with_tool_use_and_cache_usage() -> None:
    usage = Usage(120, 30, cache_creation_input_tokens=7, cache_read_input_tokens=90)
    reply = message(
        [text("Looking."), tool_use("read_file", {"path": "a.py"}, id="toolu_1")], usage=usage
    )
    with FakeMessagesServer(sequence(reply)) as server:
        msg = create(make_client(server))
        [recorded] = server.requests

    assert isinstance(msg, Message)
    assert msg.id.startswith("msg_") and msg.model == MODEL and msg.role == "assistant"
    assert msg.stop_reason == "tool_use" and msg.stop_sequence is None
    assert isinstance(msg.content[0], TextBlock) and msg.content[0].text == "Looking."
    block = msg.content[1]
    assert isinstance(block, ToolUseBlock)
    assert (block.id, block.name, block.input) == ("toolu_1", "read_file", {"path": "a.py"})
    assert msg.usage.input_tokens == 120 and msg.usage.output_tokens == 30
    assert msg.usage.cache_creation_input_tokens == 7
    assert msg.usage.cache_read_input_tokens == 90
    assert msg._request_id is not None and msg._request_id.startswith("req_")
    assert recorded.path == "/v1/messages" and recorded.status == 200
    assert recorded.call_index == 0
    assert recorded.body["model"] == MODEL and recorded.body["messages"] == HELLO
    assert recorded.headers["anthropic-version"]


def test_default_stop_reason_and_estimated_usage() -> None:
    with FakeMessagesServer(sequence(message("All done."))) as server:
        msg = create(make_client(server))
    assert msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_streaming_delivers_the_same_message() -> None:
    blocks = [text("Let me edit."), tool_use("edit_file", {"path": "a.py", "old": "x", "new": "y"})]
    with FakeMessagesServer(sequence(message(blocks), repeat_last=True)) as server:
        client = make_client(server)
        with client.messages.stream(
            model=MODEL, max_tokens=256, messages=HELLO, tools=TOOLS
        ) as stream:
            final = stream.get_final_message()
        events = list(
            client.messages.create(
                model=MODEL, max_tokens=256, messages=HELLO, tools=TOOLS, stream=True
            )
        )
    assert final.stop_reason == "tool_use"
    assert isinstance(final.content[0], TextBlock) and final.content[0].text == "Let me edit."
    block = final.content[1]
    assert isinstance(block, ToolUseBlock)
    assert block.input == {"path": "a.py", "old": "x", "new": "y"}
    assert final.usage.output_tokens > 0
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


# --- auth --------------------------------------------------------------------------------------


def test_api_key_arg_is_sent_as_bearer(fake: FakeMessagesServer) -> None:
    create(make_client(fake, api_key=KEY))
    [recorded] = fake.requests
    # api_key= → "Authorization: Bearer <key>" in this SDK; no x-api-key header at all.
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in recorded.headers
    assert recorded.auth == "bearer"


def test_auth_token_arg_is_sent_as_bearer(fake: FakeMessagesServer) -> None:
    create(make_client(fake, auth_token=KEY))
    [recorded] = fake.requests
    # auth_token= → "Authorization: Bearer <token>" as well.
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in recorded.headers
    assert recorded.auth == "bearer"


def test_x_api_key_header_is_accepted(fake: FakeMessagesServer) -> None:
    client = make_client(
        fake, default_headers={"x-api-key": KEY, "Authorization": anthropic.Omit()}
    )
    create(client)
    [recorded] = fake.requests
    assert recorded.headers["x-api-key"] == KEY
    assert "authorization" not in recorded.headers
    assert recorded.auth == "x-api-key"


@pytest.mark.parametrize("kind", ["api_key", "auth_token", "x-api-key"])
def test_a_wrong_key_is_an_authentication_error(fake: FakeMessagesServer, kind: str) -> None:
    if kind == "x-api-key":
        headers = {"x-api-key": "nope", "Authorization": anthropic.Omit()}
        client = make_client(fake, default_headers=headers)
    else:
        client = make_client(fake, **{kind: "nope"})
    with pytest.raises(anthropic.AuthenticationError) as caught:
        create(client)
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": caught.value.request_id,
    }
    assert fake.call_count == 0 and fake.requests[0].auth is None


# --- errors and retries ------------------------------------------------------------------------


def test_529_is_an_overloaded_error_and_max_retries_0_sends_it_once() -> None:
    with FakeMessagesServer(sequence(overloaded(), repeat_last=True)) as server:
        with pytest.raises(anthropic.OverloadedError) as caught:
            create(make_client(server, max_retries=0))
        assert len(server.requests) == 1
    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert server.requests[0].headers["x-stainless-retry-count"] == "0"


def test_with_retries_on_a_529_is_retried() -> None:
    fast_529 = error(529, "overloaded_error", "Overloaded", {"retry-after-ms": "10"})
    with FakeMessagesServer(sequence(fast_529, message("ok"))) as server:
        msg = create(make_client(server, max_retries=2))
    assert msg.content[0].type == "text"
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert [r.status for r in server.requests] == [529, 200]


def test_429_is_a_rate_limit_error_with_retry_after_visible() -> None:
    with (
        FakeMessagesServer(sequence(rate_limited(1))) as server,
        pytest.raises(anthropic.RateLimitError) as caught,
    ):
        create(make_client(server))
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert len(server.requests) == 1


def test_500_is_an_internal_server_error() -> None:
    with (
        FakeMessagesServer(sequence(error(500, "api_error", "boom"))) as server,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        create(make_client(server))
    assert not isinstance(caught.value, anthropic.OverloadedError)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "boom"},
        "request_id": caught.value.request_id,
    }


def test_a_malformed_200_body_is_a_plain_json_decode_error() -> None:
    # The SDK does not wrap this one: a truncated 200 body raises json.JSONDecodeError.
    bad = raw(200, b'{"id": "msg_x", "truncated', {"content-type": "application/json"})
    with FakeMessagesServer(sequence(bad)) as server, pytest.raises(json.JSONDecodeError):
        create(make_client(server))


def test_a_non_json_5xx_is_an_internal_server_error() -> None:
    page = raw(502, b"<html>bad gateway</html>", {"content-type": "text/html"})
    with (
        FakeMessagesServer(sequence(page)) as server,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        create(make_client(server))
    assert caught.value.status_code == 502
    assert caught.value.body == "<html>bad gateway</html>"


def test_a_slow_reply_times_the_client_out() -> None:
    with (
        FakeMessagesServer(sequence(delayed(message("late"), 2.0))) as server,
        pytest.raises(anthropic.APITimeoutError),
    ):
        create(make_client(server, timeout=0.3))


def test_an_exhausted_script_is_a_500_the_sdk_does_not_retry() -> None:
    with FakeMessagesServer(sequence(message("once"))) as server:
        client = make_client(server, max_retries=3)
        create(client)
        with pytest.raises(anthropic.InternalServerError) as caught:
            create(client)
    assert "ScriptExhausted" in str(caught.value)
    assert len(server.requests) == 2  # x-should-retry: false held the SDK back
    [exc] = server.script_errors
    assert isinstance(exc, ScriptExhausted)


def test_other_paths_are_404(fake: FakeMessagesServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        make_client(fake).models.list()
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert fake.requests[0].method == "GET"


# --- request validation ------------------------------------------------------------------------


def test_a_tool_result_for_an_unknown_tool_use_id_is_a_400() -> None:
    first = message([tool_use("read_file", {"path": "a.py"}, id="toolu_known")])
    with FakeMessagesServer(sequence(first, message("done"))) as server:
        client = make_client(server)
        msg = create(client)
        messages: list[MessageParam] = [
            *HELLO,
            {"role": "assistant", "content": msg.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "x"}
                ],
            },
        ]
        with pytest.raises(anthropic.BadRequestError) as caught:
            create(client, messages)
        assert "toolu_unknown" in str(caught.value)
        assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert server.call_count == 1  # the script never saw the bad request

        messages[-1] = {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_known", "content": "print(1)"}
            ],
        }
        assert create(client, messages).stop_reason == "end_turn"


def _post(server: FakeMessagesServer, body: Any, **headers: str) -> httpx2.Response:
    sent = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **headers}
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(f"{server.base_url}/v1/messages", content=payload, headers=sent)


def _msgs(*roles: str) -> list[dict[str, Any]]:
    return [{"role": role, "content": "hi"} for role in roles]


_USE = {"type": "tool_use", "id": "toolu_a", "name": "read_file", "input": {}}
_RESULT = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "ok"}
_GOOD: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": _msgs("user")}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"max_tokens": 10, "messages": _msgs("user")}, "model"),
        ({"model": MODEL, "messages": _msgs("user")}, "max_tokens"),
        ({**_GOOD, "max_tokens": "10"}, "max_tokens"),
        ({**_GOOD, "max_tokens": True}, "max_tokens"),
        ({**_GOOD, "messages": []}, "messages"),
        ({**_GOOD, "messages": _msgs("assistant")}, "first message"),
        ({**_GOOD, "messages": _msgs("user", "user")}, "alternate"),
        ({**_GOOD, "messages": _msgs("user", "assistant", "system")}, "role"),
        (
            {
                **_GOOD,
                "tools": TOOLS,
                "messages": [
                    *_msgs("user"),
                    {"role": "assistant", "content": [_USE]},
                    *_msgs("user"),
                ],
            },
            "without `tool_result`",
        ),
        (
            {
                **_GOOD,
                "messages": [
                    *_msgs("user"),
                    {"role": "assistant", "content": [_USE]},
                    {"role": "user", "content": [_RESULT]},
                ],
            },
            "must define tools",
        ),
        (b"{not json", "parsing the body"),
    ],
)
def test_invalid_bodies_are_400(fake: FakeMessagesServer, body: Any, fragment: str) -> None:
    response = _post(fake, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]
    assert fake.call_count == 0


def test_a_valid_raw_body_and_a_missing_version_header(fake: FakeMessagesServer) -> None:
    ok = _post(fake, _GOOD)
    assert ok.status_code == 200 and ok.headers["request-id"].startswith("req_")
    assert ok.json()["type"] == "message"
    no_version = httpx2.post(f"{fake.base_url}/v1/messages", json=_GOOD, headers={"x-api-key": KEY})
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]


# --- concurrency -----------------------------------------------------------------------------


def _burst(server: FakeMessagesServer, n: int) -> list[str]:
    """n requests released together from n threads; what each got."""
    client = make_client(server)
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            create(client)
            outcome = "ok"
        except anthropic.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "1"
            outcome = "429"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcomes


def test_max_concurrent_rejects_the_excess_with_429() -> None:
    reply = message([tool_use("read_file", {"path": "a.py"})])
    with FakeMessagesServer(
        sequence(reply, repeat_last=True), max_concurrent=2, latency_s=0.3
    ) as server:
        outcomes = _burst(server, 8)
    assert len(outcomes) == 8
    rejected = outcomes.count("429")
    assert rejected >= 1 and outcomes.count("ok") >= 2
    assert server.rejected_for_concurrency == rejected
    assert server.call_count == outcomes.count("ok")
    # peak_concurrency counts admitted requests only: never above the limit.
    assert 1 <= server.peak_concurrency <= 2
    # peak_offered_concurrency includes the rejected: a 429 means 2 were already in flight.
    assert server.peak_offered_concurrency >= 3
    assert [r.status for r in server.requests].count(429) == rejected


def test_without_a_limit_peak_concurrency_shows_what_the_client_ran_at_once() -> None:
    reply = message("ok")
    with FakeMessagesServer(sequence(reply, repeat_last=True), latency_s=0.3) as server:
        outcomes = _burst(server, 4)
    assert outcomes == ["ok"] * 4
    assert 2 <= server.peak_concurrency <= 4
    assert server.rejected_for_concurrency == 0


# --- ReplayScript ----------------------------------------------------------------------------

REPLAY_YAML = """\
attempts:
  - steps:
      - {tool: read_file, args: {path: shop/a.py}}
      - {tool: finish, args: {summary: first try}}
  - steps:
      - {tool: edit_file, args: {path: shop/a.py, old: "x", new: "y"}}
      - {tool: finish, args: {summary: second try}}
"""


@pytest.fixture
def replay_server(tmp_path: Path) -> Iterator[FakeMessagesServer]:
    (tmp_path / "demo.replay.yaml").write_text(REPLAY_YAML, encoding="utf-8")
    with FakeMessagesServer(ReplayScript(tmp_path)) as server:
        yield server


def _walk(client: anthropic.Anthropic, first: MessageParam, limit: int = 10) -> list[Message]:
    """Play a conversation: answer every tool_use with a tool_result until end_turn."""
    messages: list[MessageParam] = [first]
    replies: list[Message] = []
    for _ in range(limit + 1):
        msg = create(client, messages)
        replies.append(msg)
        if msg.stop_reason != "tool_use":
            return replies
        results: list[Any] = [
            {"type": "tool_result", "tool_use_id": b.id, "content": f"ran {b.name}"}
            for b in msg.content
            if isinstance(b, ToolUseBlock)
        ]
        messages += [
            {"role": "assistant", "content": msg.content},
            {"role": "user", "content": results},
        ]
    raise AssertionError("the replay never ended")


def _calls(replies: list[Message]) -> list[tuple[str, object]]:
    return [(b.name, b.input) for m in replies for b in m.content if isinstance(b, ToolUseBlock)]


def test_replay_plays_each_attempt_in_order(replay_server: FakeMessagesServer) -> None:
    client = make_client(replay_server)
    # attempt 1: the first user message as a list of text blocks
    first: MessageParam = {
        "role": "user",
        "content": [{"type": "text", "text": "Fix it.\nspec: demo\nattempt: 1\n"}],
    }
    replies = _walk(client, first)
    assert _calls(replies) == [
        ("read_file", {"path": "shop/a.py"}),
        ("finish", {"summary": "first try"}),
    ]
    assert [m.stop_reason for m in replies] == ["tool_use", "tool_use", "end_turn"]
    assert all(len([b for b in m.content if b.type == "tool_use"]) <= 1 for m in replies)
    usage = [m.usage for m in replies]
    assert usage[0].cache_read_input_tokens == 0 and (usage[0].cache_creation_input_tokens or 0) > 0
    assert all((u.cache_read_input_tokens or 0) > 0 for u in usage[1:])
    assert all(u.input_tokens > 0 and u.output_tokens > 0 for u in usage)

    # attempt 2: a fresh conversation, first message a plain string
    replies = _walk(client, {"role": "user", "content": "spec: demo\nattempt: 2\nFix it again."})
    assert _calls(replies) == [
        ("edit_file", {"path": "shop/a.py", "old": "x", "new": "y"}),
        ("finish", {"summary": "second try"}),
    ]


@pytest.mark.parametrize(
    ("first_message", "fragment"),
    [
        ("spec: nosuch\nattempt: 1", "no replay trajectory for spec 'nosuch'"),
        ("spec: demo\nattempt: 3", "has no attempt 3"),
        ("no header lines here", "spec: <id>"),
    ],
)
def test_replay_refuses_what_it_does_not_know(
    replay_server: FakeMessagesServer, first_message: str, fragment: str
) -> None:
    client = make_client(replay_server)
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client, [{"role": "user", "content": first_message}])
    assert fragment in str(caught.value)


def test_replay_refuses_a_tool_the_request_does_not_define(
    replay_server: FakeMessagesServer,
) -> None:
    client = make_client(replay_server)
    with pytest.raises(anthropic.BadRequestError, match="read_file"):
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "spec: demo\nattempt: 1"}],
            tools=[t for t in TOOLS if t["name"] != "read_file"],
        )


DEMO_REPLAYS = sorted((REPO_ROOT / "specs").glob("*.replay.yaml"))


@pytest.mark.parametrize("path", DEMO_REPLAYS, ids=lambda p: p.name)
def test_replay_plays_the_demo_trajectories(path: Path) -> None:
    spec_id = path.name.removesuffix(".replay.yaml")
    attempts = yaml.safe_load(path.read_text(encoding="utf-8"))["attempts"]
    with FakeMessagesServer(ReplayScript(path.parent)) as server:
        client = make_client(server)
        for number, attempt in enumerate(attempts, 1):
            first: MessageParam = {
                "role": "user",
                "content": f"Work on this spec.\nspec: {spec_id}\nattempt: {number}\n",
            }
            replies = _walk(client, first, limit=len(attempt["steps"]) + 1)
            expected = [(s["tool"], s.get("args", {})) for s in attempt["steps"]]
            assert _calls(replies) == expected
