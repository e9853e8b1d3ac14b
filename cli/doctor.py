"""`harness doctor` and `harness run --dry-run`: what a run needs, checked without running any
agent (see harness.preflight); one line per finding, with its fix.

Exit 0 when nothing is wrong (warnings allowed), 1 when a finding is an error, 2 for bad usage
(a spec path or policy file that does not exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import PolicyOption, RunsDirOption, StoreOption, resolve_policy, store_url
from cli.render import console, escape, fail, plural
from cli.run import AgentChoice

if TYPE_CHECKING:
    from harness.config.policy import AgentKind, Policy
    from harness.preflight import Finding

LEVEL_STYLE = {"error": "red", "warning": "yellow"}


def doctor(
    specs: Annotated[
        list[Path] | None,
        typer.Argument(help="Spec files or directories of specs to check (default: none)."),
    ] = None,
    policy: PolicyOption = None,
    agent: Annotated[
        AgentChoice | None, typer.Option(help="Check this agent instead of the policy's.")
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Check that a run can start, without running any agent: the sandbox, each gate's tool
    inside it, the agent, the store, and the specs' repositories. Exit 0 when nothing is
    wrong (warnings allowed), 1 when something is."""
    findings = diagnose(specs or [], policy, agent, runs_dir, store)
    raise typer.Exit(report(findings))


def diagnose(
    targets: list[Path],
    policy_option: Path | None,
    agent: AgentKind | None,
    runs_dir: Path,
    store: str | None,
) -> list[Finding]:
    """Every finding for a run of `targets` under the policy; typer.Exit(2) for bad usage."""
    from harness.config.spec import SpecSet, load_specs
    from harness.errors import InputError
    from harness.preflight import (
        check_agent,
        check_sandbox,
        check_spec_errors,
        check_store,
        check_uncommitted,
    )
    from harness.preflight.tools import check_tools
    from harness.sandbox.limits import Confinement

    try:
        policy_path = resolve_policy(policy_option, targets)
        if not policy_path.is_file():
            raise InputError(f"{policy_path}: policy file not found (pass --policy FILE)")
        spec_set = load_specs(targets) if targets else SpecSet([], [])
    except InputError as exc:
        raise fail(str(exc)) from None
    findings: list[Finding] = check_sandbox()
    loaded = _policy(policy_path, findings)
    kind: AgentKind | None = None
    if loaded is not None:
        kind = agent or loaded.agent.kind
        findings += check_agent(loaded, kind, spec_set.specs, policy_path)
        findings += _backends(loaded, policy_path)
    findings += check_store(store_url(store, loaded, runs_dir))
    findings += check_spec_errors(spec_set.errors)
    findings += check_uncommitted(spec_set.specs)
    if loaded is not None and kind is not None:
        confinement = Confinement.of(loaded.limits, loaded.sandbox)
        findings += check_tools(loaded, kind, spec_set.specs, confinement)
    return findings


def _policy(path: Path, findings: list[Finding]) -> Policy | None:
    from harness.config.policy import load_policy
    from harness.errors import InputError
    from harness.preflight import Finding

    try:
        return load_policy(path)
    except InputError as exc:
        findings.append(Finding("error", "policy", str(exc)))
        return None


def _backends(policy: Policy, source: Path) -> list[Finding]:
    """The forge's token and client, and the Kubernetes client, when the policy uses them."""
    from harness.errors import InputError
    from harness.preflight import Finding

    findings: list[Finding] = []
    try:
        policy.publish.check_forge(source)
        if policy.publish.forge != "local":
            from harness.publish.forge import require_client

            require_client(policy.publish.forge)
    except InputError as exc:
        findings.append(Finding("error", "publish", str(exc)))
    if policy.integration.backend == "kubernetes":
        try:
            from harness.integration.kubernetes import require_kubernetes

            require_kubernetes()
        except InputError as exc:
            findings.append(Finding("error", "integration", str(exc)))
    return findings


def report(findings: list[Finding]) -> int:
    """Print one line per finding and a closing count; the exit code (0 clean, 1 errors)."""
    for finding in findings:
        style = LEVEL_STYLE[finding.level]
        console().print(
            f"[{style}]{finding.level}:[/{style}] {escape(finding.line())}",
            highlight=False,
            soft_wrap=True,
        )
    errors = sum(finding.level == "error" for finding in findings)
    warnings = len(findings) - errors
    if not findings:
        console().print("doctor: no problems found", highlight=False)
    else:
        console().print(
            f"doctor: {plural(errors, 'error')}, {plural(warnings, 'warning')}", highlight=False
        )
    return 1 if errors else 0
