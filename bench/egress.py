"""Per-command cost of egress as policy (issue 11, item 4): what the bridge adds to the start of
an integration gate's command, interleaved in one process so every variant sees the same load.

    unbridged     `ConfinedDirectory.run(command)`: no network but the sandbox's own loopback
    bridged       the same with `egress=Egress(ports=…)` for three routed services, as an
                  integration gate of examples/mesh gets: a private 0700 dir of unix sockets
                  and harness's relay threads on the host, the in-sandbox launcher (harness's
                  python -I -S: listen, fork the relay, load the seccomp filter itself, exec),
                  and the refusing proxy

Two commands: `true` through `ConfinedDirectory.run` (the start alone, as a gate pays it, with
its per-command cgroups), and one HTTP GET to a service on the host's loopback, both GET
variants as bare `bwrap.wrap` + `run_process` without cgroups (before: `network=True`, the host
network, what integration gates had; bridged: through the bridge).

    .venv/bin/python bench/egress.py [--iterations 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stats import percentile

from harness.sandbox import Completed
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.bridge import Egress, HostBridge
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.process import run_process

GET = "python -I -S -c \"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/').read()\""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    probe = bwrap.probe()
    if not probe.available:
        sys.exit(f"bubblewrap is needed: {probe.reason}")
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Ok) for _ in range(3)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = tuple(int(server.server_address[1]) for server in servers)
    get = GET.format(port=ports[0])
    with tempfile.TemporaryDirectory(prefix="bench-egress-") as tmp:
        worktree, scratch = Path(tmp, "worktree"), Path(tmp, "scratch")
        worktree.mkdir()
        scratch.mkdir()
        box = ConfinedDirectory(worktree, worktree, scratch)
        env = bwrap.sandbox_env(scratch)
        options = {"cwd": worktree, "writable": [worktree, scratch]}
        readable = bwrap.needed_host_paths()

        def get_host_network() -> Completed:
            argv = bwrap.wrap(probe.reason, get, readable=readable, network=True, **options)
            return run_process(argv, cwd=worktree, env=env, timeout_s=30)

        def get_bridged() -> Completed:
            with HostBridge(Egress(ports=ports)) as bridge:
                argv = bwrap.wrap(probe.reason, get, readable=readable, bridge=bridge, **options)
                return run_process(argv, cwd=worktree, env=env | bridge.env(), timeout_s=30)

        variants: dict[str, Callable[[], Completed]] = {
            "true, unbridged": lambda: box.run("true", timeout_s=30),
            "true, bridged": lambda: box.run("true", 30, egress=Egress(ports=ports)),
            "GET, host network (before)": get_host_network,
            "GET, bridged": get_bridged,
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for iteration in range(args.iterations + 5):
            for name, run in variants.items():
                begin = time.perf_counter()
                done = run()
                elapsed = (time.perf_counter() - begin) * 1000
                if done.exit_code != 0:
                    sys.exit(f"{name}: exited {done.exit_code}: {done.output[-2000:]}")
                if iteration >= 5:  # warm-up not counted
                    samples[name].append(elapsed)
    for server in servers:
        server.shutdown()
        server.server_close()
    report = {
        "iterations": args.iterations,
        "ms": {
            name: {
                "p50": round(statistics.median(values), 2),
                "p90": round(percentile(values, 90), 2),
                "mean": round(statistics.fmean(values), 2),
            }
            for name, values in samples.items()
        },
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
