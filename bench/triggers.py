"""`harness serve` under a burst: 1,000 GitHub deliveries, 20 % of them duplicates, sent as
fast as loopback clients can while the worker lanes run the admitted tasks; then single
tickets into an idle, warmed-up server, for the time from delivery to the task's first node.

The server is the real `harness serve` subprocess (uvicorn, SQLite store under the run
directory, 2 worker lanes); payloads are GitHub's own example `issues.labeled` payload
(npm @octokit/webhooks-examples, `make webhooks`), one issue number per ticket, signed over
the exact bytes. Each ticket's task is the replay agent writing one file and one gate
(`test -f done.txt`) on a one-commit repository: real tasks, small ones.

Burst: 800 distinct tickets, plus 100 redeliveries (same delivery id) and 100 replays (same
body, new id) of some of them, shuffled (seed 15), sent by 8 client threads (--clients) over
keep-alive connections. Measured: each delivery's ack latency at the client (request written
→ response read), and afterwards, from the store, what the ledger made of them: tasks
created against distinct tickets (lost: a ticket with no task; doubled: a ticket with two).

First node: 10 tickets one at a time, each once the one before is verified, into a server up
for 10 s (its start-up warm-up done); the time from the ledger's `received_at` to the first
`enter` event of the task's run (events.jsonl).

    .venv/bin/python bench/triggers.py [--tickets 800] [--duplicates 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from host import report
from stats import percentile

SOURCE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SOURCE / "tests"))  # the payloads and the server wrapper are test code
from webhooks import ServeProject, Server, labeled, sign  # noqa: E402

from harness.store import open_store  # noqa: E402


def burst(tickets: int, duplicates: int, clients: int) -> dict[str, Any]:
    project = ServeProject(Path(tempfile.mkdtemp(prefix="bench-triggers-")))
    for number in range(1, tickets + 1):
        project.replay_for(number)
    rng = random.Random(15)
    originals = []
    for number in range(1, tickets + 1):
        originals.append((json.dumps(labeled(number)).encode(), str(uuid.uuid4())))
    repeats = []
    for n, (body, delivery) in enumerate(rng.sample(originals, duplicates)):
        repeats.append((body, delivery if n % 2 == 0 else str(uuid.uuid4())))
    sends = originals + repeats
    rng.shuffle(sends)
    server = Server(project)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    queue = iter(sends)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                break
            body, delivery = item
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": sign(body),
            }
            started = time.perf_counter()
            conn.request("POST", "/webhooks/github", body, headers)
            response = conn.getresponse()
            response.read()
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                statuses[response.status] += 1
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    running_by_end = sum(1 for _ in project.runs.glob("*/events.jsonl"))
    server.stop()
    store = open_store(project.store_url())
    rows = store.trigger_deliveries(100_000)
    verdicts = Counter(row.verdict for row in rows)
    admitted: Counter[str] = Counter(
        row.ticket_key or "" for row in rows if row.verdict == "admitted"
    )
    tasks = sum(
        len(store.tasks(row.run_id)) for row in rows if row.verdict == "admitted" and row.run_id
    )
    store.close()
    return {
        "deliveries": len(sends),
        "distinct_tickets": tickets,
        "duplicates_sent": duplicates,
        "clients": clients,
        "wall_s": round(wall, 2),
        "rate_per_s": round(len(sends) / wall, 1),
        "http_statuses": dict(statuses),
        "ack_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "ack_max_ms": round(max(latencies) * 1000, 1),
        "ledger_rows": len(rows),
        "verdicts": dict(verdicts),
        "tasks_created": tasks,
        "lost": tickets - len(admitted),
        "doubled": sum(1 for count in admitted.values() if count > 1),
        "tasks_started_during_burst": running_by_end,
    }


def first_node(count: int) -> dict[str, Any]:
    project = ServeProject(Path(tempfile.mkdtemp(prefix="bench-triggers-first-")))
    server = Server(project)
    time.sleep(10)  # a server that has been up a while: its warm-up (imports, probes) done
    waits: list[float] = []
    acks: list[float] = []
    try:
        for number in range(1, count + 1):
            task = project.replay_for(number)
            body = json.dumps(labeled(number)).encode()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            headers = {
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(body),
            }
            started = time.perf_counter()
            conn.request("POST", "/webhooks/github", body, headers)
            conn.getresponse().read()
            acks.append(time.perf_counter() - started)
            conn.close()
            project.wait_state(number, "verified")
            store = open_store(project.store_url())
            [row] = [r for r in store.trigger_deliveries(10) if r.run_id == task]
            store.close()
            events = (project.runs / task / "events.jsonl").read_text("utf-8").splitlines()
            first = next(json.loads(e) for e in events if json.loads(e)["event"] == "enter")
            waits.append(datetime.fromisoformat(first["ts"]).timestamp() - row.received_at)
    finally:
        server.stop()
    return {
        "tickets": count,
        "first_node_p50_ms": round(percentile(waits, 50) * 1000, 1),
        "first_node_max_ms": round(max(waits) * 1000, 1),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    b, f = result["burst"], result["first_node"]
    return "\n".join(
        [
            "| figure | value | goal |",
            "|---|---|---|",
            f"| deliveries sent (distinct tickets + duplicates) | {b['deliveries']} "
            f"({b['distinct_tickets']} + {b['duplicates_sent']}), {b['clients']} clients, "
            f"{b['rate_per_s']}/s | |",
            f"| ack latency p50 / p99 / max | {b['ack_p50_ms']} / {b['ack_p99_ms']} / "
            f"{b['ack_max_ms']} ms | p99 < 200 ms |",
            f"| HTTP statuses | {b['http_statuses']} | |",
            f"| ledger verdicts | {b['verdicts']} | |",
            f"| tasks created / distinct tickets | {b['tasks_created']} / "
            f"{b['distinct_tickets']} (lost {b['lost']}, doubled {b['doubled']}) | equal, 0, 0 |",
            f"| tasks started while the burst was sent | {b['tasks_started_during_burst']} | |",
            f"| delivery → first node, p50 / max ({f['tickets']} tickets, idle server) | "
            f"{f['first_node_p50_ms']} / {f['first_node_max_ms']} ms | p50 < 1 s |",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=800)
    parser.add_argument("--duplicates", type=int, default=200)
    parser.add_argument("--first", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8, help="concurrent senders")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {
        "burst": burst(args.tickets, args.duplicates, args.clients),
        "first_node": first_node(args.first),
    }
    return report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
