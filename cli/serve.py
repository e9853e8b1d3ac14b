"""`harness serve`: the webhook receiver (harness.triggers.app on uvicorn) and its worker
lanes, which run admitted tickets' tasks through the same batch graph and store as
`harness run`. Also the wiring `harness triggers replay` shares.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import RunsDirOption, store_url
from cli.render import fail

if TYPE_CHECKING:
    from harness.config.policy import Policy
    from harness.night.schedule import ScheduleTicker
    from harness.run.context import RunContext
    from harness.sandbox.pool import SandboxPool
    from harness.store import Store
    from harness.triggers.intake import Intake
    from harness.triggers.status import StatusBoard
    from harness.triggers.workers import WorkerLanes

SERVE_MODULES = ("starlette", "uvicorn")
"""What the `serve` extra installs, as import names."""

log = logging.getLogger("harness.serve")

ConfigOption = Annotated[
    Path, typer.Option("--config", help="The triggers config (triggers.yaml).", exists=False)
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL (sqlite:///… or postgresql://…). Default: $HARNESS_STORE_URL, then "
        "sqlite under --runs-dir (the mapped policies' store.url is not read: they may differ).",
    ),
]


def serve(
    config: ConfigOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    workers: Annotated[
        int | None, typer.Option(help="Worker lanes. Default: the config's workers.", min=1)
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Receive tracker webhooks (GitHub, Linear, generic) and run the tasks they admit."""
    _require_serve_extra()
    import uvicorn

    from harness.triggers.app import build_app

    service = TriggerService.open(config, runs_dir, store, workers, need_secrets=True)
    app = build_app(service.intake, service.ready, on_start=service.start, on_stop=service.stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def _require_serve_extra() -> None:
    import importlib.util

    missing = [name for name in SERVE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise fail(f"harness serve needs {', '.join(missing)}: pip install 'harness[serve]'")


@dataclass
class TriggerService:
    """The intake, the status board and the worker lanes, on one store."""

    store: Store
    intake: Intake
    board: StatusBoard
    lanes: WorkerLanes
    runner: TicketRunner
    ticker: ScheduleTicker | None = None
    """Fires the config's `schedules:` (harness night), when it has any."""

    @classmethod
    def open(
        cls,
        config: Path,
        runs_dir: Path,
        store: str | None,
        workers: int | None,
        *,
        need_secrets: bool,
    ) -> TriggerService:
        from harness.errors import InputError
        from harness.store import open_store
        from harness.triggers.config import load_triggers
        from harness.triggers.forges import ForgeStatusComments
        from harness.triggers.intake import Intake, Mappings
        from harness.triggers.status import LocalStatusComments, StatusBoard
        from harness.triggers.workers import WorkerLanes

        try:
            triggers = load_triggers(config)
            secrets = triggers.secrets() if need_secrets else {}
            mappings = Mappings.load(triggers)
            state = open_store(store_url(store, None, runs_dir))
        except InputError as exc:
            raise fail(str(exc)) from None
        runs_dir.mkdir(parents=True, exist_ok=True)
        local = LocalStatusComments(runs_dir.resolve() / "triggers" / "comments")
        board = StatusBoard(ForgeStatusComments(mappings.forges, local))
        runner = TicketRunner(state, board, runs_dir)
        lanes = WorkerLanes(workers or triggers.config.workers, runner)
        intake = Intake(mappings, secrets, state, runs_dir, board, on_admitted=lanes.submit)
        ticker = _schedules(config, runs_dir, store) if triggers.config.schedules else None
        return cls(state, intake, board, lanes, runner, ticker)

    def start(self) -> None:
        """The lanes, with every ticket's unfinished task queued first (a serve killed
        mid-task continues it); the engine warmed up beside them."""
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        self.lanes.start(self.store.unfinished_trigger_runs())
        if self.ticker is not None:
            self.ticker.start()

    def ready(self) -> bool:
        try:
            self.store.trigger_deliveries(limit=1)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Running tasks are asked to stop as on SIGTERM (each goes back to the store,
        `interrupted`, and continues when serve starts again)."""
        if self.ticker is not None:
            self.ticker.stop()
        self.runner.stop_all()
        self.lanes.stop(timeout_s=30)
        self.runner.close_pool()
        self.board.flush()
        self.board.close()


def _schedules(config: Path, runs_dir: Path, store: str | None) -> ScheduleTicker:
    """Every 30 s, `harness night --config` on serve's own config: its due schedules fire
    once across workers, each night in a process of its own (its signals, its report)."""
    from harness.night.schedule import ScheduleTicker

    argv = [sys.executable, "-m", "cli.main", "night", "--config", str(config)]
    argv += ["--runs-dir", str(runs_dir), *(["--store", store] if store else [])]
    return ScheduleTicker(lambda: log.info("schedules: exit %s", subprocess.call(argv)))


def _warm_up() -> None:
    """What the first task would otherwise pay for before its first node (seconds): the
    workflow's imports (LangGraph, the agents, the gates) and the sandbox's probes, which are
    cached per process."""
    import graphs.batch  # noqa: F401
    from harness.sandbox import bubblewrap

    if bubblewrap.probe().available:
        bubblewrap.hardening_gaps()


@dataclass
class TicketRunner:
    """Runs one ticket's run to its end: the worker lanes' runner."""

    store: Store
    board: StatusBoard
    runs_dir: Path = Path("runs")
    _live: dict[str, RunContext] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False
    _pool: SandboxPool | None = None
    """Ready sandboxes kept across tickets' runs (made with the first run's policy), removed
    when serve stops."""

    def pool(self, policy: Policy) -> SandboxPool:
        from harness.sandbox.pool import SandboxPool
        from harness.store import worker_id

        with self._lock:
            if self._pool is None:
                home = self.runs_dir.resolve() / "serve-pool" / "pool"
                self._pool = SandboxPool(
                    self.store,
                    home,
                    "serve-pool",
                    owner=worker_id(),
                    lease_s=policy.store.lease_s,
                    config=policy.sandbox.pool,
                    keep_unknown=True,
                )
            return self._pool

    def close_pool(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def stop_all(self) -> None:
        with self._lock:
            self._stopping = True
            for ctx in self._live.values():
                ctx.live.stop.request(signal.SIGTERM)

    def __call__(self, run_id: str) -> None:
        """One ticket's run through the batch graph, as `harness resume` continues a run; its
        progress and outcome on the ticket's status comment."""
        from cli.run import run_context
        from graphs.batch import run_batch
        from harness.config.policy import parse_policy
        from harness.config.spec import Spec
        from harness.run.ledger import RunLedger
        from harness.triggers.status import Status, TaskProgress, final_status

        record = self.store.get_run(run_id)
        ticket = self.store.trigger_ticket_of_run(run_id)
        if record is None or ticket is None:
            log.warning("run %s: not a ticket's run in the store; skipped", run_id)
            return
        run_dir = Path(record.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        policy_path = Path(record.policy_path)
        policy = parse_policy(record.policy_text, policy_path)
        ctx = run_context(
            self.store,
            run_id,
            run_dir,
            policy,
            policy_path,
            record.options["agent"],
            None,
            [],
            started_at=datetime.fromtimestamp(record.created_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            pool=self.pool(policy),
        )
        progress = TaskProgress(self.board, ticket.ticket_key, ticket.address, run_id)
        ledger: RunLedger = ctx.services.ledger
        ledger.listener = progress  # the ticket's comment, not a terminal, shows the steps
        with self._lock:
            if self._stopping:  # serve stopped while this run was being set up: left queued
                ctx.services.ledger.close()
                return
            self._live[run_id] = ctx
        try:
            specs = [Spec.model_validate(spec) for spec in record.specs]
            ctx.live.sandboxes.start_pool(specs)  # kept for the next tickets on this base
            results = run_batch(ctx, specs)
        finally:
            with self._lock:
                self._live.pop(run_id, None)
            ctx.services.integration.stop()
            ctx.services.caches.close()
            ledger.close()
        for result in results:
            if result.outcome == "interrupted":
                status = Status("interrupted", "harness serve stopped; it continues on restart")
                self.board.post(ticket.ticket_key, ticket.address, status)
            else:
                status = final_status(result.model_dump(), run_id)
                self.board.post(ticket.ticket_key, ticket.address, status)
