"""The routing key: one per sandbox, carried as W3C baggage and in tracestate.

A request whose `baggage` header has `<baggage_key>=<routing key>` (or whose `tracestate` has
`harness=<routing key>`) belongs to that sandbox. Headers are written and read with
OpenTelemetry's W3C propagators, so encoding, list members and properties follow the specs the
services' own instrumentation follows.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from email.message import Message

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACESTATE_KEY = "harness"
"""The tracestate member (a W3C tracestate vendor key) that carries the routing key."""
MAX_KEY_LENGTH = 63  # a DNS label: usable in Kubernetes labels and names as is

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_BAGGAGE = W3CBaggagePropagator()
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def routing_key(run_id: str, spec_id: str) -> str:
    """A DNS-safe key naming one task's sandbox: readable (run and spec) and unique (a hash of
    both, so truncation or folding case never makes two tasks share a key)."""
    digest = hashlib.sha256(f"{run_id}\0{spec_id}".encode()).hexdigest()[:8]
    readable = _NOT_DNS.sub("-", f"{run_id}-{spec_id}".lower()).strip("-")
    readable = readable[: MAX_KEY_LENGTH - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}" if readable else f"sbx-{digest}"


def routing_headers(key_name: str, key: str) -> dict[str, str]:
    """`baggage`, `traceparent` and `tracestate` for a request of sandbox `key`.

    The traceparent is a fresh trace: W3C tracestate is only meaningful (and only propagated by
    instrumented services) beside a valid traceparent.
    """
    context = baggage.set_baggage(key_name, key)
    span = SpanContext(
        trace_id=int.from_bytes(secrets.token_bytes(16)) or 1,
        span_id=int.from_bytes(secrets.token_bytes(8)) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([(TRACESTATE_KEY, key)]),
    )
    context = trace.set_span_in_context(NonRecordingSpan(span), context)
    headers: dict[str, str] = {}
    _BAGGAGE.inject(headers, context=context)
    _TRACE_CONTEXT.inject(headers, context=context)
    return headers


def key_from_headers(headers: Mapping[str, str] | Message, key_name: str) -> str | None:
    """The routing key a request carries: its baggage member, else its tracestate member.

    `headers`: http.server's (case-insensitive) message, or a mapping with lower-case names.
    """
    value = baggage.get_baggage(key_name, _BAGGAGE.extract(headers))
    if isinstance(value, str) and value:
        # OpenTelemetry keeps a member's properties in its value ("key;prop=1"): drop them.
        return value.split(";", 1)[0].strip() or None
    span = trace.get_current_span(_TRACE_CONTEXT.extract(headers)).get_span_context()
    return span.trace_state.get(TRACESTATE_KEY) if span.is_valid else None
