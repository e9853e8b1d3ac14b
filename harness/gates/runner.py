"""Gates: the deterministic checks every change must pass, run in policy order in the sandbox.

Each failure is classified before anyone is blamed for it: a timeout, a kill from outside (the
out-of-memory killer) or a missing tool is infrastructure, re-run or escalated by policy and
never charged to the agent; a failing test gate is re-run on the same tree (a pytest gate only
its failed tests: harness.gates.pytest_rerun), and tests that then pass are flaky. What remains
is parsed into problems the agent can act on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import redact
from harness.config.policy import FlakyConfig, GateConfig, InfrastructureConfig
from harness.gates.base_compare import AgainstBase, Observed, observe
from harness.gates.pytest_report import (
    contradiction,
    contradiction_problem,
    read_report,
    report_dir,
)
from harness.gates.pytest_rerun import failed_tests, pytest_options
from harness.gates.record import (
    GateRecord,
    GateRun,
    Phase,
    excerpt,
    gate_record,
    infrastructure_problem,
    not_run_record,
)
from harness.parsers import parse_gate_output
from harness.parsers.pytest import junit_outcomes
from harness.problems import Problem, problem_type
from harness.sandbox import Completed, Sandbox
from harness.sandbox.bridge import Denial, Egress

PARSE_LIMIT_BYTES = 16 * 1024 * 1024
"""Past this, problems come from the capped head and tail of the output only."""


@dataclass(frozen=True)
class GateEnvironment:
    """What one run of a gate needs beyond the sandbox, made ready just before it runs."""

    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the sandbox's environment (an integration gate's routing key and URLs)."""
    egress: Egress | None = None
    """What the gate may reach: an integration gate's routed services, bridged into its
    sandbox; what it tried to reach besides, through a proxy, lands in `egress.denials`."""
    not_applicable: str | None = None
    """Set when the gate does not apply: it passes without running, and the record says why."""
    ran: Completed | None = None
    """Set when the gate's command already ran elsewhere: the Kubernetes backend runs integration
    tests as Jobs in the cluster (the sandbox holds no cluster credentials, so they cannot run
    from it). The outcome is recorded and parsed as if the command had run in the sandbox."""


class GateSetupError(Exception):
    """The gate's environment could not be made ready: infrastructure, not the agent's."""

    def __init__(self, title: str, detail: str, todo: str, log: Path | None = None) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.todo = todo
        """What a person must do about it."""
        self.log = log


GatePrepare = Callable[[GateConfig], GateEnvironment]
"""Called before every run of every gate; raises GateSetupError when it cannot prepare."""


def no_services(gate: GateConfig) -> GateEnvironment:
    """The default preparation: none. Integration gates need a run's services (the task
    graph prepares them), so without them they do not apply rather than run blind."""
    if gate.kind == "integration":
        return GateEnvironment(not_applicable="no services were started for integration gates")
    return GateEnvironment()


def acceptance_gates(commands: list[str]) -> list[GateConfig]:
    """A spec's acceptance commands as gates run after the policy's own."""
    return [
        GateConfig(name=f"acceptance-{n}", kind="test", command=command)
        for n, command in enumerate(commands, start=1)
    ]


@dataclass
class GateRunner:
    """Runs gates in a sandbox, with the policy's rules for infrastructure and flaky failures."""

    sandbox: Sandbox
    log_dir: Path
    instance: str
    """Prefix for problem instances, e.g. runs/<run-id>/<spec-id>."""
    infrastructure: InfrastructureConfig = field(default_factory=InfrastructureConfig)
    flaky: FlakyConfig = field(default_factory=FlakyConfig)
    deadline: float | None = None
    """time.monotonic() past which no gate may run (the task's wall-clock budget)."""
    prepare: GatePrepare = no_services
    """Makes each gate run's environment ready (e.g. an integration gate's services)."""
    against_base: AgainstBase | None = None
    """Compares each passing gate with its run on the base; its findings fail the gate."""
    observe_always: bool = False
    """Measure every run (tests' outcomes, files checked) into `observed`: a base run."""
    observed: dict[str, Observed] = field(default_factory=dict)
    """The last run's measurement per gate name, when `observe_always`."""
    compare_s: float = 0.0
    """Time spent measuring runs and comparing them with the base (its runs included): gate
    time no gate record holds."""
    tests: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per test gate whose last run failed or was a re-run: each test's last outcome on this
    tree, by node id, from pytest's reports (a re-run of some tests updates only theirs)."""

    def run_all(self, gates: list[GateConfig], *, attempt: int, phase: Phase) -> GateRun:
        """Gates in order; the first that fails for good stops the rest."""
        result = GateRun()
        for gate in gates:
            record, problems = self._run_with_retries(gate, attempt, phase, result)
            if record.passed:
                continue
            weaker = record.base is not None and record.base.refused  # no re-run changes that
            if gate.kind == "test" and not record.infrastructure_failure and not weaker:
                problems = self._sort_out_flaky(gate, attempt, phase, problems, result)
                flaky_here = [p for p in result.flaky if p.gate == gate.name]
                if not problems and self.flaky.block and flaky_here:
                    result.problems, result.failed = flaky_here, record
                    result.flaky_blocked = True
                    break
                if not problems:
                    continue
            result.problems, result.failed = problems, result.records[-1]
            break
        return result

    def _run_with_retries(
        self, gate: GateConfig, attempt: int, phase: Phase, result: GateRun
    ) -> tuple[GateRecord, list[Problem]]:
        for _ in range(self.infrastructure.retries + 1):
            record, problems = self.run_once(gate, attempt, phase, run=len(_runs(result, gate)) + 1)
            result.records.append(record)
            if not (record.timed_out or record.killed):
                break  # a missing tool stays missing: no retry
        return record, problems

    def _sort_out_flaky(
        self, gate: GateConfig, attempt: int, phase: Phase, problems: list[Problem], result: GateRun
    ) -> list[Problem]:
        """Re-run a failing test gate (a pytest gate: only its failed tests, unless policy says
        `flaky.rerun: all`); tests failing only on an earlier run are flaky."""
        for _ in range(self.flaky.reruns):
            before = self.tests.get(gate.name)  # None: no pytest report to go by
            only = failed_tests(before) if before and self.flaky.rerun == "failed" else []
            run = len(_runs(result, gate)) + 1
            record, again = self.run_once(gate, attempt, phase, run=run, only=only)
            result.records.append(record)
            if only and gate.name not in self.tests and not record.infrastructure_failure:
                # No report: pytest refused the list (the command itself turns its cache plugin
                # off, say). The whole gate runs again instead.
                record, again = self.run_once(gate, attempt, phase, run=run + 1)
                result.records.append(record)
            if record.infrastructure_failure:
                return problems  # the re-run proves nothing; judge on the first run
            if before is None:  # not pytest: the whole gate ran again, judged by its output
                if record.passed:
                    gone = problems
                else:
                    still = {p.test_id for p in again if p.test_id}
                    gone = [p for p in problems if p.test_id and p.test_id not in still]
                problems_now = [] if record.passed else again
            else:
                gone, problems_now = _flaky_by_report(
                    problems, again, record, self.tests.get(gate.name, {})
                )
            result.flaky += [p.model_copy(update={"category": "flaky"}) for p in gone]
            problems = problems_now
            if not problems:
                break
        return problems

    def run_once(
        self, gate: GateConfig, attempt: int, phase: Phase, run: int = 1, only: Sequence[str] = ()
    ) -> tuple[GateRecord, list[Problem]]:
        """One run of `gate`; `only`: a pytest re-run limited to these node ids."""
        started = time.monotonic()
        instance = f"{self.instance}/{phase}-{attempt}/{gate.name}"
        try:
            setup = self.prepare(gate)
        except GateSetupError as exc:
            return _setup_failed(gate, exc, attempt, phase, run, instance, started)
        if setup.not_applicable is not None:
            why = setup.not_applicable
            record = not_run_record(
                gate, attempt, phase, run, started, passed=True, not_applicable=why
            )
            return record.model_copy(update={"excerpt": f"not applicable: {why}"}), []
        setup_s = time.monotonic() - started
        timeout = gate.timeout_s
        if self.deadline is not None:
            timeout = max(1.0, min(timeout, self.deadline - time.monotonic()))
        stem = f"{phase}-{attempt}-{gate.name}" + (f"-run{run}" if run > 1 else "")
        log = self.log_dir / f"{stem}.log"
        scratch = self.sandbox.scratch
        with report_dir(scratch) as reports, pytest_options(scratch, only) as options:
            # xunit1 reports carry each test's file, which makes exact test ids.
            report = f"--junitxml={reports.report} -o junit_family=xunit1"
            env = {**setup.env, "PYTEST_ADDOPTS": f"{options} {report}"}
            if setup.ran is not None:
                setup_s = max(0.0, setup_s - setup.ran.duration_s)  # prepare's time included it
                done = _ran_elsewhere(setup.ran, log)
            else:
                done = self.sandbox.run(
                    gate.command, timeout_s=timeout, log_path=log, env=env, egress=setup.egress
                )
            junit = read_report(reports)
        record = gate_record(gate, done, attempt=attempt, phase=phase, run=run, setup_s=setup_s)
        if only:
            record = record.model_copy(update={"only_tests": list(only)})
        contradicted = contradiction(gate, done, junit, record.counts)
        if contradicted is not None:
            record = record.model_copy(update={"passed": False})
        tests = self._measure_tests(gate, record, junit, partial=bool(only))
        refused = egress_problems(gate, setup.egress, instance, record.log)
        if refused:  # a test that tried to reach past its services fails, whatever it printed
            denied = [str(denial) for denial in setup.egress.denials] if setup.egress else []
            record = record.model_copy(update={"passed": False, "egress_refused": denied})
        measure = self.observe_always or (record.passed and self.against_base is not None)
        if measure and not record.infrastructure_failure:
            measuring = time.monotonic()
            listing_log = log.with_name(f"{stem}.files.log")
            if only and tests is not None:  # the earlier run's outcomes, updated by this one's
                observed = Observed(tests=tests)
            else:
                observed = observe(gate, self.sandbox, junit, listing_log, timeout)
            self.observed[gate.name] = observed
            weaker: list[Problem] = []
            if record.passed and self.against_base is not None:
                record, weaker = self.against_base.review(gate, record, observed, instance)
            self.compare_s += time.monotonic() - measuring
            if weaker:
                return record, weaker
        if record.passed:
            return record, []
        if record.infrastructure_failure:
            return record, [infrastructure_problem(record, instance), *refused]
        with tempfile.TemporaryDirectory(prefix="harness-junit-") as private:
            # The parser reads a path: the report's bytes, copied where only harness writes.
            copy = Path(private) / "junit.xml" if junit is not None else None
            if copy is not None and junit is not None:
                copy.write_bytes(junit)
            problems = parse_gate_output(
                gate,
                output_to_parse(done),
                root=self.sandbox.path,
                junit_xml=copy,
                exit_code=done.exit_code,
                log=record.log,
                instance=instance,
            )
        if contradicted is not None:
            problems = [contradiction_problem(gate, contradicted, instance, record.log), *problems]
        problems = [*refused, *problems]
        if not record.counts:  # machine formats (JSON) print no closing count line
            record = record.model_copy(update={"counts": {"found": len(problems)}})
        return record, problems

    def _measure_tests(
        self, gate: GateConfig, record: GateRecord, junit: bytes | None, *, partial: bool
    ) -> dict[str, str] | None:
        """The tests' outcomes kept for a flaky re-run: after a failing run or a re-run (a
        partial one updates the outcomes before it); None, and nothing kept, without a report."""
        if gate.kind != "test" or (record.passed and record.run == 1):
            return None
        outcomes = junit_outcomes(junit) if junit is not None else None
        if outcomes is None:
            self.tests.pop(gate.name, None)
            return None
        if partial:
            outcomes = {**self.tests.get(gate.name, {}), **outcomes}
        self.tests[gate.name] = outcomes
        return outcomes


def _flaky_by_report(
    problems: list[Problem], again: list[Problem], rerun: GateRecord, outcomes: dict[str, str]
) -> tuple[list[Problem], list[Problem]]:
    """(the flaky ones of `problems`, what still fails) after a re-run of a pytest gate, by
    its report: a test is flaky only when the re-run's report shows it passed (one missing
    from the re-run still fails); a problem naming no test goes only when the whole gate ran
    again and passed. What the re-run found besides (another test failing, a finding against
    the base) fails too."""
    whole_passed = rerun.passed and not rerun.only_tests
    gone = [
        p for p in problems if (outcomes.get(p.test_id) == "passed" if p.test_id else whole_passed)
    ]
    known = {p.test_id for p in problems if p.test_id}
    still = [p for p in problems if p not in gone]
    still += [p for p in again if not (p.test_id and p.test_id in known)]
    return gone, still


def _setup_failed(
    gate: GateConfig,
    error: GateSetupError,
    attempt: int,
    phase: Phase,
    run: int,
    instance: str,
    started: float,
) -> tuple[GateRecord, list[Problem]]:
    log = str(error.log) if error.log else None
    record = not_run_record(
        gate, attempt, phase, run, started, passed=False, setup_failure=error.title
    )
    record = record.model_copy(update={"log": log, "excerpt": excerpt(error.detail)})
    problem = Problem(
        type=problem_type("gate-setup-failed"),
        title=f"Gate {gate.name!r} could not be set up: {error.title}",
        detail=f"{error.detail}\n\nA person must act: {error.todo}.",
        instance=instance,
        gate=gate.name,
        command=gate.command,
        category="infrastructure",
        retryable=True,
        owner_action_required=True,
        log=log,
    )
    return record, [problem]


def egress_problems(
    gate: GateConfig, egress: Egress | None, instance: str, log: str | None
) -> list[Problem]:
    """The connections harness refused during a gate run, as one problem the agent reads."""
    denials: list[Denial] = list(egress.denials) if egress is not None else []
    if not denials:
        return []
    targets = sorted({f"{denial.host}:{denial.port}" for denial in denials})
    return [
        Problem(
            type=problem_type("egress-refused"),
            title=f"The {gate.kind} test tried to reach {', '.join(targets)}; egress is refused",
            detail=(
                f"harness refused {len(denials)} connection(s) from gate {gate.name!r}: "
                + ", ".join(str(denial) for denial in denials[:10])
                + ". Policy: a gate's command reaches only the services harness routes to it "
                "(the HARNESS_URL_* variables); nothing else on the network. Remove the call, "
                "or make it to a routed service."
            ),
            instance=instance,
            gate=gate.name,
            command=gate.command,
            code="egress-refused",
            category="agent_fixable",
            log=log,
        )
    ]


def _ran_elsewhere(done: Completed, log: Path) -> Completed:
    """A command run outside the sandbox, with its output in the gate's log like any other."""
    output = redact.current().text(done.output)  # as every sandboxed command's log is
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output, encoding="utf-8")
    return replace(done, output=output, log_path=log)


def output_to_parse(done: Completed) -> str:
    """What a gate run's problems are parsed from: the whole output when it was cut in memory
    but is not huge (findings in the middle of a long report, say 300 lint violations as JSON,
    must not be lost to the head-and-tail cap), else the output as captured."""
    log = done.log_path
    if done.output_cut_bytes and log is not None and log.stat().st_size <= PARSE_LIMIT_BYTES:
        return log.read_text(encoding="utf-8", errors="replace")
    return done.output


def _runs(result: GateRun, gate: GateConfig) -> list[GateRecord]:
    return [r for r in result.records if r.name == gate.name]
