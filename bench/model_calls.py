"""Harness-side overhead per model call, with 50 tasks calling the (fake) Messages API at once.

Each task is a real `AnthropicAgent.attempt` on its own `WorktreeSandbox` (its own branch of a
tiny temporary repository), in its own thread; all 50 start together behind a barrier and share
ONE `Fleet`, as the tasks of a run do. Each agent has its own `anthropic.Anthropic` client (as
`select_agent` gives each task), pointed at tests/fake_anthropic.py's `FakeMessagesServer`.

The server answers every conversation with `--steps` K tool_use turns (alternately `read_file`
README.md and `list_files`, each with a short text block) and then `finish`: K + 1 model calls
per attempt. It runs in a child process by default, so its Python work (parsing, validating,
rendering JSON) does not compete with the harness for the bench process's GIL; it still shares
the host's CPUs. `--in-process` runs it inside the bench process instead, for comparison.

What is timed, per model call, all with time.monotonic (CLOCK_MONOTONIC, one clock for both
processes on Linux):

- server time: in the server, from the moment http.server has parsed the request line and
  headers (entry of the fake's request handler) until the response is written and flushed to
  the socket. It includes reading the body, the `latency_s` sleep, validation, the script,
  rendering. It excludes http.server's parsing of the request line and headers (well under a
  millisecond), which therefore counts as harness-side below. Its end is when the server thread
  reads the clock after the flush: on a busy host that can be after the client already has the
  reply (the smallest gap, `min_gap_ms` in the JSON, then goes slightly negative).
- tool time: `ToolCall.duration_s` of each step (`finish` included).
- (a) harness-side overhead: the attempt's wall time (around `agent.attempt`) minus every call's
  server time minus every tool's time, i.e. everything else: attempt set-up (system prompt, tool
  schemas), the SDK (building the request, httpx, reading and parsing the response), our loop,
  the fleet limiter (its wait included), cost accounting, redaction, trajectory writing, waiting
  for the GIL/CPU behind the other 49 tasks. It is split per call on the server's clock: call i
  gets the time from the previous call's response written (or the attempt's start) to call i's
  request arriving, minus the tool that ran in between; the last call also gets the time from
  its response to the attempt's end, minus `finish`. The split is by gaps, so per call it moves
  the SDK's reading of response i into call i + 1; sums per attempt are exact.
- (b) SDK call minus server: `latency_s` from trajectory.jsonl (the time around
  `client.messages.with_raw_response.create`, which reads the whole body) minus that call's
  server time, matched by request id.
- limiter queue: `queued_s` from trajectory.jsonl (waiting for a FleetLimiter slot).
- (c) harness loop: (a) - (b) - queue. Per attempt this is duration - sum(latency_s) -
  sum(queued_s) - sum(tool time): it does not depend on the server's clock at all.
  (`latency_s` and `queued_s` are rounded to 0.1 ms in the trajectory.)
- CPU per call: process CPU time (all threads) of the bench process over the batch / calls.

Server sockets get TCP_NODELAY (unless `--nagle`): http.server sends the headers and the body
as two writes, and with Nagle's algorithm the body waits for the client's delayed ACK, which
adds ~40 ms to every call on Linux; that stall is the fake's, not the harness's or the API's.

Configurations: every `--latency` (server sleep per request) x every `--limits`
(`rate_limit.max_concurrent_requests`; 64 never queues 50 tasks, 8 shows the cost of queueing),
each `--repeats` times, calls pooled over repeats; and per latency a baseline of `--baseline`
batches of 1 task alone (no contention), at the highest limit. Before measuring, a small warm-up
batch per server (5 tasks) pays for lazy imports and first-use set-up; it is not counted.
Sandboxes are provisioned once before any clock starts and reused (the tools only read); each
batch builds fresh clients and agents and a fresh Fleet, before its clock starts (that build
time is reported per task, as context: in a run it is paid once per task).

    .venv/bin/python bench/model_calls.py [--tasks 50] [--steps 5] [--latency 0.05 0]
        [--limits 64 8] [--repeats 3] [--baseline 20] [--in-process] [--nagle] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol

import anthropic
import host
from stats import percentile

SOURCE = Path(__file__).resolve().parent.parent
# The fake Messages API is test code (tests/fake_anthropic.py), not part of the harness package:
# put tests/ on the import path to use it, here and in the server's child process.
sys.path.insert(0, str(SOURCE / "tests"))
from fake_anthropic import FakeMessagesServer, Reply, message, new_id, text, tool_use  # noqa: E402
from fake_anthropic import Usage as WireUsage  # noqa: E402

from harness.agents import AttemptContext, AttemptRecord, Usage  # noqa: E402
from harness.agents.anthropic import API_KEY_VARIABLE, AnthropicAgent  # noqa: E402
from harness.agents.fleet import Fleet  # noqa: E402
from harness.config.policy import Policy  # noqa: E402
from harness.config.spec import Spec, load_spec  # noqa: E402
from harness.sandbox.local import WorktreeSandbox  # noqa: E402

KEY = "bench-model-calls-key-0123456789"
MODEL = "claude-bench"
PRICES = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
# Plausible usage for a turn of a short conversation; fixed so the server does no estimating.
WIRE_USAGE = WireUsage(200, 40, cache_creation_input_tokens=150, cache_read_input_tokens=2500)
WARMUP_TASKS = 5
GIT_IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
FIGURES = [
    ("harness_ms", "**(a) harness-side**"),
    ("harness_unqueued_ms", "(a) minus limiter queue"),
    ("sdk_ms", "(b) SDK call minus server"),
    ("loop_ms", "(c) harness loop"),
    ("queued_ms", "limiter queue"),
    ("latency_ms", "SDK call (`latency_s`)"),
    ("server_ms", "server time"),
    ("tool_ms", "tool time"),
]


# --- the server ------------------------------------------------------------------------------

_local = threading.local()
"""Per server thread: the request id the script gave the request being handled."""


def conversation_script(steps: int) -> Callable[[dict[str, Any], int], Reply]:
    """K tool_use turns, then finish. The turn is the number of assistant messages so far."""

    def script(body: dict[str, Any], call_index: int) -> Reply:
        turn = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        request_id = new_id("req")
        _local.request_id = request_id
        if turn < steps:
            name, args = ("read_file", {"path": "README.md"})
            if turn % 2:
                name, args = ("list_files", {"path": "."})
            content = [text(f"Step {turn + 1}: {name}."), tool_use(name, args)]
        else:
            content = [tool_use("finish", {"summary": "Read the repository."})]
        return message(content, usage=WIRE_USAGE, headers={"request-id": request_id})

    return script


class TimedServer(FakeMessagesServer):
    """The fake, timing each request from handler entry to response flushed, by request id."""

    def __init__(self, steps: int, latency_s: float, nagle: bool = False) -> None:
        super().__init__(conversation_script(steps), api_key=KEY, latency_s=latency_s)
        self.nagle = nagle
        self._timings: dict[str, tuple[float, float]] = {}
        self._untimed = 0
        self._timing_lock = threading.Lock()

    def _connection_opened(self, conn: socket.socket) -> None:
        # http.server writes the status line and headers, then the body, as two small writes;
        # with Nagle's algorithm on, the second waits for the client's delayed ACK (40 ms on
        # Linux). That stall is this server's, not the API's: by default Nagle is off here.
        if not self.nagle:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._connection_opened(conn)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        _local.request_id = None
        started = time.monotonic()
        super()._handle(handler)  # type: ignore[arg-type]
        ended = time.monotonic()
        with self._timing_lock:
            if _local.request_id is None:
                self._untimed += 1  # an error reply: the script never ran
            else:
                self._timings[_local.request_id] = (started, ended)

    def take_report(self) -> dict[str, Any]:
        """What was timed since the last report (then forgotten), and this process's CPU time."""
        with self._timing_lock:
            timings, self._timings = self._timings, {}
            untimed, self._untimed = self._untimed, 0
        peak, self.peak_concurrency = self.peak_concurrency, 0
        return {
            "timings": timings,
            "untimed": untimed,
            "peak_concurrency": peak,
            "script_errors": [str(e) for e in self.script_errors],
            "cpu_s": time.process_time(),
        }


def serve_child(latency_s: float, steps: int, nagle: bool) -> int:
    """The child process: the base URL on stdout, then a report for every `dump` on stdin."""
    server = TimedServer(steps, latency_s, nagle).start()
    print(json.dumps({"base_url": server.base_url}), flush=True)
    for line in sys.stdin:
        if line.strip() == "dump":
            print(json.dumps(server.take_report()), flush=True)
    server.stop()
    return 0


@dataclass
class ServerReport:
    timings: dict[str, tuple[float, float]]
    untimed: int
    peak_concurrency: int
    script_errors: list[str]
    cpu_s: float | None
    """The server's process CPU time so far (cumulative); None in-process (it is the bench's)."""


class Server(Protocol):
    base_url: str

    def dump(self) -> ServerReport: ...

    def close(self) -> None: ...


class ChildServer:
    """TimedServer in a child process (this file with --serve)."""

    def __init__(self, latency_s: float, steps: int, nagle: bool) -> None:
        argv = [sys.executable, __file__, "--serve", str(latency_s), str(steps), str(int(nagle))]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        line = self._stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the fake server's child process did not start")
        self.base_url: str = json.loads(line)["base_url"]

    def dump(self) -> ServerReport:
        self._stdin.write("dump\n")
        self._stdin.flush()
        raw = json.loads(self._stdout.readline())
        raw["timings"] = {k: (v[0], v[1]) for k, v in raw["timings"].items()}
        return ServerReport(**raw)

    def close(self) -> None:
        self._stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stdout.close()


class LocalServer:
    """TimedServer on threads of this process (`--in-process`)."""

    def __init__(self, latency_s: float, steps: int, nagle: bool) -> None:
        self._server = TimedServer(steps, latency_s, nagle).start()
        self.base_url: str = self._server.base_url

    def dump(self) -> ServerReport:
        return ServerReport(**(self._server.take_report() | {"cpu_s": None}))

    def close(self) -> None:
        self._server.stop()


# --- the tasks -------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, check=True)


def make_repository(work: Path) -> Spec:
    """A tiny committed repository and a spec pointing at it."""
    repo = work / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "README.md").write_text(
        "# tiny\n\nA small project for the model-call benchmark.\n\n"
        + "".join(f"- item {n}: nothing to see here\n" for n in range(20)),
        encoding="utf-8",
    )
    (repo / "src" / "app.py").write_text(
        '"""The app."""\n\n\ndef add(a: int, b: int) -> int:\n    return a + b\n', encoding="utf-8"
    )
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--no-verify", "-m", "tiny")
    spec = work / "bench-model-calls.md"
    spec.write_text(
        "---\nid: bench-model-calls\ntitle: Model-call benchmark\ntier: 1\n"
        f"repo: {repo}\n---\nRead the repository, then finish.\n",
        encoding="utf-8",
    )
    return load_spec(spec)


def make_policy(max_concurrent: int, steps: int) -> Policy:
    return Policy.model_validate(
        {
            "agent": {
                "kind": "anthropic",
                "model": MODEL,
                "max_tokens": 1024,
                "rate_limit": {"max_concurrent_requests": max_concurrent},
            },
            "gates": [{"name": "tests", "kind": "test", "command": "pytest -q"}],
            "prices": {MODEL: PRICES},
            "budget": {"max_steps": steps + 5, "wall_clock_s": 600},
        }
    )


@contextmanager
def api_key_in_environment() -> Iterator[None]:
    """ANTHROPIC_API_KEY set as in a real run, so each agent's redactor has a secret to scrub."""
    before = os.environ.get(API_KEY_VARIABLE)
    os.environ[API_KEY_VARIABLE] = KEY
    try:
        yield
    finally:
        if before is None:
            del os.environ[API_KEY_VARIABLE]
        else:
            os.environ[API_KEY_VARIABLE] = before


@dataclass
class TaskRun:
    started: float
    ended: float
    record: AttemptRecord
    trajectory: list[dict[str, Any]]


@dataclass
class Batch:
    """One batch: every task started at once."""

    wall_s: float
    cpu_s: float
    server_cpu_s: float | None
    calls: int
    build_s: float
    """Building the clients and agents (before the clock): SDK client, redactor."""
    limiter_peak: int
    server_peak: int
    per_call_ms: dict[str, list[float]] = field(default_factory=dict)
    min_gap_ms: float = 0.0


def run_batch(
    server: Server,
    spec: Spec,
    sandboxes: list[WorktreeSandbox],
    policy: Policy,
    logs: Path,
    server_cpu_before: float | None,
) -> tuple[Batch, float | None]:
    """Run one attempt per sandbox, all at once; the batch and the server's CPU time after it."""
    fleet = Fleet.for_policy(policy)  # one, shared by every task, as in a run
    assert policy.agent.model is not None
    building = time.perf_counter()
    with api_key_in_environment():
        clients = [
            anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
            for _ in sandboxes
        ]
        agents = [
            AnthropicAgent(
                policy.agent, policy.prices[policy.agent.model], fleet, policy.gates, client=c
            )
            for c in clients
        ]
    build_s = time.perf_counter() - building
    tasks = len(sandboxes)
    runs: list[TaskRun | None] = [None] * tasks
    failures: list[str] = []
    barrier = threading.Barrier(tasks + 1)

    def work(index: int) -> None:
        task_logs = logs / f"task-{index:03d}"
        context = AttemptContext(
            number=1,
            budget=policy.budget,
            spent=Usage(),
            deadline=time.monotonic() + 600,
            log_dir=task_logs / "agent" / "attempt-1",
            trajectory=task_logs / "trajectory.jsonl",
        )
        barrier.wait()
        started = time.monotonic()
        try:
            # No feedback on attempt 1: None (`Feedback | None`; before that type, a list that
            # was tested for emptiness, which None passes too).
            record = agents[index].attempt(spec, sandboxes[index], None, context)
        except Exception as exc:  # reported below: the batch is not valid
            failures.append(f"task {index}: {type(exc).__name__}: {exc}")
            return
        ended = time.monotonic()
        lines = context.trajectory.read_text(encoding="utf-8").splitlines()
        runs[index] = TaskRun(started, ended, record, [json.loads(line) for line in lines])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(tasks)]
    for thread in threads:
        thread.start()
    barrier.wait()
    cpu_started, wall_started = time.process_time(), time.monotonic()
    for thread in threads:
        thread.join()
    wall_s, cpu_s = time.monotonic() - wall_started, time.process_time() - cpu_started
    for client in clients:
        client.close()
    report = server.dump()
    if failures or report.script_errors or report.untimed:
        raise RuntimeError(
            f"batch failed: {failures[:3]} script errors {report.script_errors[:3]}, "
            f"{report.untimed} error replies"
        )
    batch = Batch(
        wall_s=wall_s,
        cpu_s=cpu_s,
        server_cpu_s=(
            None
            if report.cpu_s is None or server_cpu_before is None
            else report.cpu_s - server_cpu_before
        ),
        calls=0,
        build_s=build_s,
        limiter_peak=fleet.limiter.peak_in_flight,
        server_peak=report.peak_concurrency,
    )
    gaps: list[float] = []
    for task in runs:
        assert task is not None
        split_calls(task, report.timings, batch, gaps)
    batch.min_gap_ms = min(gaps) * 1000
    return batch, report.cpu_s


def split_calls(
    task: TaskRun,
    timings: dict[str, tuple[float, float]],
    batch: Batch,
    gaps: list[float],
) -> None:
    """Add one attempt's calls to the batch's per-call figures (see the module docstring)."""
    record, entries = task.record, task.trajectory
    if record.stop_reason != "finished" or len(record.steps) != len(entries):
        raise RuntimeError(
            f"attempt stopped {record.stop_reason!r} ({record.error}) after "
            f"{len(record.steps)} tools and {len(entries)} calls"
        )
    previous = task.started
    harness: list[float] = []
    for index, (entry, step) in enumerate(zip(entries, record.steps, strict=True)):
        if "error" in entry or entry["retries"]:
            raise RuntimeError(f"call {index} failed or was retried: {entry}")
        arrived, written = timings[entry["request_id"]]
        gap = arrived - previous - (record.steps[index - 1].duration_s if index else 0.0)
        gaps.append(gap)
        harness.append(gap)
        previous = written
        server_s = written - arrived
        figures = {
            "server_ms": server_s,
            "tool_ms": step.duration_s,
            "latency_ms": entry["latency_s"],
            "queued_ms": entry["queued_s"],
            "sdk_ms": entry["latency_s"] - server_s,
        }
        for key, value in figures.items():
            batch.per_call_ms.setdefault(key, []).append(value * 1000)
    harness[-1] += task.ended - previous - record.steps[-1].duration_s
    for index, value in enumerate(harness):
        queued = entries[index]["queued_s"]
        sdk = batch.per_call_ms["sdk_ms"][batch.calls + index] / 1000
        batch.per_call_ms.setdefault("harness_ms", []).append(value * 1000)
        batch.per_call_ms.setdefault("harness_unqueued_ms", []).append((value - queued) * 1000)
        batch.per_call_ms.setdefault("loop_ms", []).append((value - sdk - queued) * 1000)
    batch.calls += len(entries)


# --- figures ---------------------------------------------------------------------------------


def describe(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


def summarize(latency_s: float, limit: int, tasks: int, batches: list[Batch]) -> dict[str, Any]:
    calls = sum(b.calls for b in batches)
    walls = [b.wall_s for b in batches]
    server_cpu = [b.server_cpu_s for b in batches if b.server_cpu_s is not None]
    pooled: dict[str, list[float]] = {}
    for batch in batches:
        for key, values in batch.per_call_ms.items():
            pooled.setdefault(key, []).extend(values)
    return {
        "tasks": tasks,
        "server_latency_s": latency_s,
        "max_concurrent_requests": limit,
        "repeats": len(batches),
        "calls_per_batch": batches[0].calls,
        "wall_s": [round(w, 3) for w in walls],
        "wall_s_median": round(statistics.median(walls), 3),
        "calls_per_s": round(calls / sum(walls), 1),
        "cpu_ms_per_call": round(sum(b.cpu_s for b in batches) / calls * 1000, 3),
        "server_cpu_ms_per_call": (
            round(sum(server_cpu) / calls * 1000, 3) if len(server_cpu) == len(batches) else None
        ),
        "agent_build_ms_per_task": round(
            sum(b.build_s for b in batches) / (tasks * len(batches)) * 1000, 2
        ),
        "limiter_peak_in_flight": max(b.limiter_peak for b in batches),
        "server_peak_concurrency": max(b.server_peak for b in batches),
        "min_gap_ms": round(min(b.min_gap_ms for b in batches), 3),
        "per_call_ms": {key: describe(values) for key, values in pooled.items()},
    }


def run(
    tasks: int = 50,
    steps: int = 5,
    latencies: tuple[float, ...] = (0.05, 0.0),
    limits: tuple[int, ...] = (64, 8),
    repeats: int = 3,
    baseline: int = 20,
    in_process: bool = False,
    nagle: bool = False,
) -> dict[str, Any]:
    load_before = host.load()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="harness-bench-model-calls-"))
    configs: list[dict[str, Any]] = []
    try:
        spec = make_repository(work)
        provisioned = time.monotonic()
        sandboxes = [
            WorktreeSandbox.provision(
                spec,
                f"bench/model-calls/{i:03d}",
                work / "wt" / f"{i:03d}",
                work / "scratch" / f"{i:03d}",
            )
            for i in range(tasks)
        ]
        provision_s = time.monotonic() - provisioned
        for latency_s in latencies:
            server: Server = (
                LocalServer(latency_s, steps, nagle)
                if in_process
                else ChildServer(latency_s, steps, nagle)
            )
            try:
                server_cpu = server.dump().cpu_s
                warm = make_policy(max(limits), steps)
                _, server_cpu = run_batch(
                    server,
                    spec,
                    sandboxes[:WARMUP_TASKS],
                    warm,
                    work / "logs" / f"warmup-lat{latency_s:g}",
                    server_cpu,
                )
                alone: list[Batch] = []
                for repeat in range(baseline):  # one task at a time: no contention
                    logs = work / "logs" / f"lat{latency_s:g}-alone-r{repeat}"
                    batch, server_cpu = run_batch(
                        server, spec, sandboxes[:1], warm, logs, server_cpu
                    )
                    alone.append(batch)
                if alone:
                    configs.append(summarize(latency_s, max(limits), 1, alone))
                for limit in limits:
                    policy = make_policy(limit, steps)
                    batches: list[Batch] = []
                    for repeat in range(repeats):
                        logs = work / "logs" / f"lat{latency_s:g}-lim{limit}-r{repeat}"
                        batch, server_cpu = run_batch(
                            server, spec, sandboxes, policy, logs, server_cpu
                        )
                        batches.append(batch)
                    configs.append(summarize(latency_s, limit, tasks, batches))
            finally:
                server.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "tasks": tasks,
        "steps": steps,
        "calls_per_task": steps + 1,
        "repeats": repeats,
        "baseline_repeats": baseline,
        "server": "in-process" if in_process else "child process",
        "server_nagle": nagle,
        "provision_s": round(provision_s, 2),
        "configs": configs,
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": host.load(),
    }


def markdown(result: dict[str, Any]) -> str:
    tasks, per_task = result["tasks"], result["calls_per_task"]
    lines = [
        f"Model calls: {tasks} concurrent tasks x {per_task} calls ({result['steps']} tool_use "
        f"turns + finish), one shared Fleet, fake Messages API in a {result['server']}; "
        f"{result['repeats']} repeats per configuration (pooled), plus "
        f"{result['baseline_repeats']} batches of 1 task alone as a baseline; "
        f"{result['elapsed_s']} s in all "
        f"({result['provision_s']} s to provision {tasks} sandboxes, not measured).",
        "",
        "| tasks | server latency | limiter slots | calls per batch | wall s (median) | calls/s "
        "| harness CPU ms/call | server CPU ms/call | peak in flight | agent build ms/task |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["configs"]:
        lines.append(
            f"| {_config(c)} | {c['calls_per_batch']} | {c['wall_s_median']:.2f} "
            f"| {c['calls_per_s']:.0f} | {c['cpu_ms_per_call']:.2f} "
            f"| {_ms(c['server_cpu_ms_per_call'])} | {c['limiter_peak_in_flight']} "
            f"| {c['agent_build_ms_per_task']:.1f} |"
        )
    for title, figures in (("Per model call", FIGURES[:5]), ("Context, per call", FIGURES[5:])):
        lines += [
            "",
            f"{title}, ms, p50 / p95 (mean):",
            "",
            "| tasks | server latency | limiter slots | "
            + " | ".join(f for _, f in figures)
            + " |",
            "|---:|---:|---:|" + "---:|" * len(figures),
        ]
        for c in result["configs"]:
            cells = []
            for key, _ in figures:
                s = c["per_call_ms"][key]
                cells.append(f"{s['p50']:.1f} / {s['p95']:.1f} ({s['mean']:.1f})")
            lines.append(f"| {_config(c)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(a) = attempt wall time - server time (request handler entry to response flushed) - "
        "tool time, split per call on the server's clock; (b) = `latency_s` - server time; "
        "(c) = (a) - (b) - `queued_s`. Harness CPU = the bench process's CPU time (all threads) "
        "/ calls; agent build = `anthropic.Anthropic(...)` + `AnthropicAgent(...)` per task, "
        "outside the clock. " + host.describe_load(result["load_before"], result["load_after"]),
    ]
    return "\n".join(lines)


def _config(c: dict[str, Any]) -> str:
    return f"{c['tasks']} | {c['server_latency_s'] * 1000:.0f} ms | {c['max_concurrent_requests']}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:  # the child process of ChildServer
        return serve_child(float(argv[1]), int(argv[2]), argv[3] == "1")
    parser = argparse.ArgumentParser(description="Harness-side overhead per model call.")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5, help="tool_use turns before finish")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.0], metavar="S")
    parser.add_argument("--limits", type=int, nargs="+", default=[64, 8], metavar="N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--baseline", type=int, default=20, help="batches of 1 task alone per latency (0: none)"
    )
    parser.add_argument("--in-process", action="store_true", help="fake server in this process")
    parser.add_argument(
        "--nagle", action="store_true", help="leave Nagle's algorithm on the server's sockets"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(
        args.tasks,
        args.steps,
        tuple(args.latency),
        tuple(args.limits),
        args.repeats,
        args.baseline,
        args.in_process,
        args.nagle,
    )
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
