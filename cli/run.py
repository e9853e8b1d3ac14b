"""`harness run` and `harness resume`: a run's specs through the batch workflow
(graphs.batch), with a live table on a terminal and the outcomes at the end.

The engine, the store and the workflow are imported inside the commands: `harness --help`
and the other commands do not pay for LangGraph, the store's drivers or the agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cli.options import (
    ConcurrencyOption,
    PolicyOption,
    RunIdOption,
    RunsDirOption,
    StoreOption,
    resolve_policy,
    store_url,
)
from cli.render import (
    LiveView,
    StepLines,
    console,
    err,
    error_line,
    escape,
    fail,
    plural,
    summary_table,
)

if TYPE_CHECKING:
    from harness.config.policy import AgentKind, Policy
    from harness.config.spec import Spec
    from harness.night.admission import Admission
    from harness.publish import Publisher
    from harness.publish.local import LocalPublisher
    from harness.run.context import RunContext
    from harness.run.ledger import TaskResult
    from harness.sandbox.pool import SandboxPool
    from harness.store import RunRecord, Store

AgentChoice = Literal["anthropic", "command", "replay"]
"""The policy's agent kinds (harness.config.policy.AgentKind), spelled out here because typer
reads the option's choices when it builds the command line: importing the policy's models
would double what `harness --help` costs. tests/test_startup.py checks the two match."""


def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files or directories of specs.")],
    policy: PolicyOption = None,
    concurrency: ConcurrencyOption = None,
    run_id: RunIdOption = None,
    agent: Annotated[AgentChoice | None, typer.Option(help="Override the policy's agent.")] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Check what the run needs, as `harness doctor` does; run nothing."
        ),
    ] = False,
) -> None:
    """Run specs through the validation loop; each ends verified (a PR record) or escalated."""
    if dry_run:
        from cli.doctor import diagnose, report

        raise typer.Exit(report(diagnose(specs, policy, agent, runs_dir, store)))
    ctx, loaded = start_run(specs, policy, concurrency, run_id, agent, runs_dir, store)
    results = execute_run(ctx, loaded, "run")
    if ctx.config.input_errors and ctx.live.stop.signum is None:
        raise typer.Exit(2)
    raise typer.Exit(run_exit_code(ctx, results))


def start_run(
    specs: list[Path],
    policy: Path | None,
    concurrency: int | None,
    run_id: str | None,
    agent: AgentChoice | None,
    runs_dir: Path,
    store: str | None,
    *,
    arrange: Callable[[Policy, list[Spec]], list[Spec]] | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[RunContext, list[Spec]]:
    """A run made and recorded, ready to execute: policy and specs loaded (bad input exits 2
    with its one line), preflight printed, its directory and store records made; its context
    and specs. `arrange` may reorder the specs, or refuse them with an InputError, before
    anything is made (`harness night`: priority and after:). `options` are recorded with the
    run, for its resume (`harness fleet`: --first-verified)."""
    from harness.config.policy import load_policy
    from harness.config.spec import load_specs
    from harness.errors import InputError
    from harness.run.context import check_run_id, create_run_dir
    from harness.store import RunRecord, open_store

    try:
        policy = resolve_policy(policy, specs)
        loaded_policy = load_policy(policy)
        agent_kind = agent or loaded_policy.agent.kind
        loaded_policy.check_agent(agent_kind, policy)
        _require_backends(loaded_policy, policy)
        spec_set = load_specs(specs)
    except InputError as exc:
        raise fail(str(exc)) from None
    for problem in spec_set.errors:
        error_line(problem)
    if not spec_set.specs:
        raise fail("no spec could be loaded; nothing was run")
    if arrange is not None:
        try:
            spec_set = replace(spec_set, specs=arrange(loaded_policy, spec_set.specs))
        except InputError as exc:
            raise fail(str(exc)) from None
    _preflight(loaded_policy, agent_kind, spec_set.specs, policy)
    try:
        run_id, _ = check_run_id(runs_dir, run_id, loaded_policy, spec_set.specs)
        # Then the store: one that does not connect stops the run before anything is made.
        state = open_store(store_url(store, loaded_policy, runs_dir))
        run_id, run_dir = create_run_dir(runs_dir, run_id, loaded_policy, spec_set.specs)
        state.create_run(
            RunRecord(
                run_id=run_id,
                run_dir=str(run_dir),
                policy_path=str(policy.resolve()),
                policy_text=policy.read_text(encoding="utf-8"),
                options={"agent": agent_kind, "concurrency": concurrency, **(options or {})},
                specs=[spec.model_dump() for spec in spec_set.specs],
                input_errors=spec_set.errors,
            ),
            [spec.id for spec in spec_set.specs],
        )
    except InputError as exc:
        raise fail(str(exc)) from None
    ctx = run_context(
        state, run_id, run_dir, loaded_policy, policy, agent_kind, concurrency, spec_set.errors
    )
    return ctx, spec_set.specs


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (its runs/ directory name).")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Resume even though the policy file changed since the start."),
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(help="Tasks at once. Default: as the run started.", min=1)
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
    now: Annotated[
        bool,
        typer.Option("--now", help="Take deferred tasks at once, before their retry time."),
    ] = False,
) -> None:
    """Continue a run that was interrupted, killed or crashed, or join it as another worker:
    finished tasks are not redone, and one in flight continues from its last completed step.
    Tasks the model API deferred continue once their retry time has passed (--now: at once)."""
    from harness.config.spec import Spec
    from harness.errors import InputError
    from harness.store import open_store, redact_url

    try:
        state = open_store(store_url(store, None, runs_dir))
        record = state.get_run(run_id)
        if record is None:
            raise InputError(
                f"resume: no run {run_id!r} in the store {redact_url(state.url)}; `harness runs` "
                "lists the runs, or pass --store if it used another store"
            )
        loaded_policy = _policy_for_resume(record, force)
        _require_backends(loaded_policy, Path(record.policy_path))
    except InputError as exc:
        raise fail(str(exc)) from None
    specs = [Spec.model_validate(spec) for spec in record.specs]
    # Runs recorded before the workflow was imported directly also hold a "workflow" option:
    # it is ignored (there is one workflow, graphs.batch).
    ctx = run_context(
        state,
        run_id,
        Path(record.run_dir),
        loaded_policy,
        Path(record.policy_path),
        record.options["agent"],
        concurrency or record.options.get("concurrency"),
        record.input_errors,
        started_at=datetime.fromtimestamp(record.created_at, UTC).isoformat(
            timespec="milliseconds"
        ),
    )
    # The run-wide spend cap counts what finished tasks already spent. (What an interrupted
    # task spent before the crash counts toward its own budget, from its checkpoint, but not
    # toward the run's.)
    for result in ctx.results():
        ctx.services.fleet.spend.add(result.usage)
    done = sum(task.status == "done" for task in state.tasks(run_id))
    console().print(
        f"resume [bold]{run_id}[/bold]: {done} of {plural(len(specs), 'task')} already done"
    )
    if now:
        state.unpark(run_id)
    elif waiting := state.parked(run_id):
        from harness.run.parking import iso

        console().print(
            f"{plural(len(waiting), 'deferred task')} not due yet (the first at "
            f"{iso(min(waiting.values()))}); `harness resume {run_id} --now` takes them at once",
            soft_wrap=True,
        )
    from cli.fleet import finish_fleet, is_fleet, prepare_fleet

    if fleet := is_fleet(specs):  # a fleet's run: set up again, ranked at the end
        prepare_fleet(ctx, bool(record.options.get("first_verified")))
    results = execute_run(ctx, specs, "resume")
    if fleet:
        finish_fleet(ctx, specs)
    raise typer.Exit(run_exit_code(ctx, results))


def _preflight(policy: Policy, agent_kind: AgentKind, specs: list[Spec], source: Path) -> None:
    """The cheap part of `harness doctor`, before anything is made: the agent can run, and
    the repositories' uncommitted changes (which tasks will not see). One line each; the run
    goes on (a task whose agent cannot run ends on its own, with the reason)."""
    from harness.preflight import check_agent, check_uncommitted

    for finding in [*check_agent(policy, agent_kind, specs, source), *check_uncommitted(specs)]:
        style = "red" if finding.level == "error" else "yellow"
        err().print(
            f"[{style}]{finding.level}:[/{style}] {escape(finding.line())}",
            highlight=False,
            soft_wrap=True,
        )


def _publisher(policy: Policy, source: Path, local: LocalPublisher) -> Publisher:
    """The local records, and with `publish.forge` set the forge's PRs too."""
    if policy.publish.forge == "local":
        return local
    from harness.publish.forge import ForgePublisher, forge_factory

    return ForgePublisher(local, policy.publish, forge_factory(policy.publish, source))


def _require_backends(policy: Policy, source: Path | None = None) -> None:
    """InputError, before anything is made, when the policy asks for a backend whose optional
    extra is not installed, or names a forge token that is not set."""
    if source is not None:
        policy.publish.check_forge(source)
    if source is not None and policy.setup is not None:
        policy.setup.secret_values(source)  # each listed secret is set
    if policy.publish.forge != "local":
        from harness.publish.forge import require_client

        require_client(policy.publish.forge)
    if policy.integration.backend == "kubernetes":
        from harness.integration.kubernetes import require_kubernetes

        require_kubernetes()


def _policy_for_resume(record: RunRecord, force: bool) -> Policy:
    """The run's policy: its file as it was at the start. If the file changed since, resuming
    is refused unless forced (then the file's current version is used)."""
    from harness.config.policy import load_policy, parse_policy, policy_changes
    from harness.errors import InputError

    path = Path(record.policy_path)
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current is not None and current != record.policy_text:
        changes = policy_changes(record.policy_text, current)
        if not force:
            raise InputError(
                f"resume: policy {path} changed since run {record.run_id} started "
                f"({'; '.join(changes)}); restore it, or pass --force to resume with the new one"
            )
        return load_policy(path)
    if current is None and not force:
        raise InputError(
            f"resume: policy {path} no longer exists; restore it, or pass --force to resume "
            "with the policy recorded when the run started"
        )
    return parse_policy(record.policy_text, path)


def run_context(
    store: Store,
    run_id: str,
    run_dir: Path,
    policy: Policy,
    policy_path: Path,
    agent_kind: AgentKind,
    concurrency: int | None,
    input_errors: list[str],
    *,
    started_at: str | None = None,
    pool: SandboxPool | None = None,
) -> RunContext:
    """The run's context, wired: its config (the overrides applied to the policy once), the
    services its tasks share, and this worker's live per-task objects. `pool`: ready sandboxes
    that outlive the run (harness serve's); by default the run's own."""
    # Imported here, with the rest of the engine, only when a run starts (see the docstring).
    from harness.agents.fleet import Fleet, account_key
    from harness.agents.limiter import StoreLimiterState
    from harness.agents.select import select_agent
    from harness.gates.caches import GateCaches
    from harness.gates.preexisting import PreexistingFailures
    from harness.integration.local import LocalIntegration
    from harness.publish.local import LocalPublisher
    from harness.run.context import LiveTasks, RunConfig, RunContext, RunServices, with_overrides
    from harness.run.effects import Effects
    from harness.run.ledger import RunLedger, utc_now
    from harness.sandbox import bubblewrap as bwrap
    from harness.sandbox.lifecycle import TaskSandboxes
    from harness.sandbox.limits import Confinement
    from harness.sandbox.pool import SandboxPool
    from harness.setup.environment import EnvironmentSetup
    from harness.store import worker_id

    isolation = bwrap.probe()
    if not isolation.available:
        err().print(
            f"[bold red]WARNING: sandbox isolation is OFF: {isolation.reason}. Agent and gate "
            "commands run unconfined on this host. Install bubblewrap (apt-get install "
            "bubblewrap) to confine them.[/bold red]"
        )
    for gap in bwrap.hardening_gaps() if isolation.available else ():
        err().print(f"[bold red]WARNING: sandbox hardening is partial: {gap}.[/bold red]")
    config = RunConfig(
        run_id=run_id,
        run_dir=run_dir,
        policy=with_overrides(policy, agent_kind, concurrency),
        policy_path=policy_path,
        started_at=started_at or utc_now(),
        input_errors=tuple(input_errors),
    )
    worker = worker_id()
    # A terminal gets a live table; a log (CI, a pipe) gets one line per step instead.
    ledger = RunLedger(run_dir, run_id, listener=None if console().is_terminal else StepLines())
    # The limiter's state is in the store: every worker on it shares the account's limit.
    limits = StoreLimiterState(store, account_key(config.policy))
    fleet = Fleet.for_policy(config.policy, limits, holder_prefix=worker)
    confinement = Confinement.of(policy.limits, policy.sandbox)
    setup = EnvironmentSetup(policy.setup, run_dir / "setup", confinement, policy_path)
    preexisting = PreexistingFailures(run_dir, confinement, setup)
    caches = GateCaches(preexisting)
    services = RunServices(
        store=store,
        worker=worker,
        ledger=ledger,
        effects=Effects(store),
        publisher=_publisher(config.policy, policy_path, LocalPublisher(run_dir, config.relative)),
        isolation=isolation,
        fleet=fleet,
        preexisting=preexisting,
        caches=caches,
        integration=LocalIntegration(),
        setup=setup,
    )
    sandboxes = TaskSandboxes(
        store,
        ledger,
        config,
        owner=worker,
        lease_s=policy.store.lease_s,
        ttl=policy.ttl,
        pool=pool
        or SandboxPool(
            store,
            run_dir / "pool",
            run_id,
            owner=worker,
            lease_s=policy.store.lease_s,
            config=policy.sandbox.pool,
        ),
        confinement=caches.view(confinement),  # the base's caches readable, for the seed copy
    )
    return RunContext(
        config,
        services,
        LiveTasks(sandboxes, new_agent=lambda spec: select_agent(spec, config.policy, fleet)),
    )


EX_TEMPFAIL = 75
"""sysexits.h: a temporary failure, try again later (tasks deferred by the model API)."""


def run_exit_code(ctx: RunContext, results: list[TaskResult]) -> int:
    """128 + the signal when the run was interrupted (130 SIGINT, 143 SIGTERM), else 1 when
    a task ended in error, else 75 when some were deferred (resume later), else 0."""
    if ctx.live.stop.signum is not None:
        return 128 + ctx.live.stop.signum
    if any(result.outcome == "error" for result in results):
        return 1
    return EX_TEMPFAIL if any(result.outcome == "deferred" for result in results) else 0


def execute_run(
    ctx: RunContext, specs: list[Spec], verb: str, admission: Admission | None = None
) -> list[TaskResult]:
    """The run's tasks through the batch workflow, SIGINT and SIGTERM stopping it gracefully
    (harness.run.interrupt); the outcomes, one per task. `admission`: a night's (cli/night.py)."""
    from rich.live import Live

    from graphs.batch import run_batch
    from harness.run.interrupt import graceful_interrupts
    from harness.store import redact_url

    config, services = ctx.config, ctx.services
    console().print(
        f"{verb} [bold]{config.run_id}[/bold]: {plural(len(specs), 'task')}, concurrency "
        f"{config.policy.concurrency}, agent {config.policy.agent.kind}, isolation "
        f"{'bubblewrap' if services.isolation.available else 'OFF'}, "
        f"store {redact_url(services.store.url)}",
        soft_wrap=True,
    )
    started = time.monotonic()
    resume_hint = f"`harness resume {config.run_id}` continues the run"
    try:
        with (
            graceful_interrupts(
                ctx.live.stop, config.policy.interrupt_grace_s, config.run_dir, resume_hint
            ),
            Live(
                get_renderable=LiveView(services.ledger, config.run_dir),
                console=console(),
                transient=True,
                auto_refresh=console().is_terminal,
            ),
        ):
            ctx.live.sandboxes.start_pool(specs)  # ready worktrees made while tasks start
            services.caches.warm(specs, config.policy.gates)  # base runs start while agents work
            results = run_batch(ctx, specs, admission)
    finally:
        ctx.live.sandboxes.stop_pool()  # the pool's worktrees and records removed
        services.integration.stop()  # integration baselines and forks: processes, worktrees
        services.caches.close()  # base runs still under way finished, snapshots removed
        services.ledger.close()
    console().print(summary_table(results))
    elapsed = f"{time.monotonic() - started:.1f}s"
    left = sum(result.outcome == "interrupted" for result in results)
    if ctx.live.stop.requested:
        console().print(
            f"interrupted after {elapsed}: {plural(left, 'task')} unfinished; {resume_hint} · "
            f"summary: {config.run_dir}/summary.json",
            soft_wrap=True,
        )
    else:
        console().print(
            f"finished in {elapsed} · summary: {config.run_dir}/summary.json", soft_wrap=True
        )
        _print_deferred(ctx, results)
    return results


def _print_deferred(ctx: RunContext, results: list[TaskResult]) -> None:
    """When to resume the tasks the model API deferred, and (once) why the breaker opened."""
    from harness.run.parking import BREAKER_OPEN, breaker_reason

    deferred = [result for result in results if result.outcome == "deferred"]
    if not deferred:
        return
    if any(BREAKER_OPEN in (result.reason or "") for result in deferred):
        why = breaker_reason(ctx) or f"{BREAKER_OPEN}: every model call of the run failed"
        console().print(f"[yellow]{escape(why)}[/yellow]", soft_wrap=True)
    run_id, due = ctx.config.run_id, min(result.retry_at or "" for result in deferred)
    console().print(
        f"{plural(len(deferred), 'task')} deferred by the model API (not charged, work kept); "
        f"resume after {due}: `harness resume {run_id}` (or with --now, at once)",
        soft_wrap=True,
    )
