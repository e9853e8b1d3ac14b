"""Preflight: what a run needs, checked without running any agent (`harness doctor`,
`harness run --dry-run`, and the cheap part at the start of every `harness run`).

Each check is one small function returning `Finding`s: an error (the run would fail or run
unconfined), a warning (it would run, but not as the user may think), or nothing. Every finding
says what is wrong and how to fix it, on one line. The programs commands start are checked in
a real sandbox by `tools.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.config.policy import AgentKind, Policy
from harness.config.spec import Spec
from harness.errors import InputError
from harness.git import GitRepository
from harness.sandbox import bubblewrap as bwrap

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    level: Level
    subject: str
    """What was checked, e.g. `sandbox`, `gate lint`, `spec fix-pagination`, `store`."""
    problem: str
    fix: str = ""
    """What to do about it, as an instruction; empty when `problem` already says (the
    one-line input errors harness raises end with their fix)."""

    def line(self) -> str:
        return f"{self.subject}: {self.problem}" + (f"; fix: {self.fix}" if self.fix else "")


# --- the sandbox ------------------------------------------------------------------------------


def check_sandbox() -> list[Finding]:
    """bubblewrap works here, and the hardening it adds (seccomp, cgroups) is all there."""
    isolation = bwrap.probe()
    if not isolation.available:
        return [
            Finding(
                "error",
                "sandbox",
                f"{isolation.reason}: agent and gate commands would run unconfined on this host",
                "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1)",
            )
        ]
    return [
        Finding(
            "warning",
            "sandbox",
            f"hardening is partial: {gap}",
            "run harness as root on a host with cgroup v1 memory and pids controllers, "
            "and with libseccomp",
        )
        for gap in bwrap.hardening_gaps()
    ]


# --- the agent --------------------------------------------------------------------------------


def check_agent(
    policy: Policy, agent_kind: AgentKind, specs: list[Spec], source: Path
) -> list[Finding]:
    """The agent can run: the policy has what it needs, the anthropic agent's key is set,
    and the replay agent has a valid trajectory for every spec. (A command agent's program is
    checked inside the sandbox, by `check_tools`.)"""
    try:
        policy.check_agent(agent_kind, source)
    except InputError as exc:
        return [Finding("error", "agent", str(exc))]
    if agent_kind == "anthropic":
        from harness.agents.anthropic import API_KEY_VARIABLE

        if not os.environ.get(API_KEY_VARIABLE):
            return [
                Finding(
                    "error",
                    "agent",
                    f"{API_KEY_VARIABLE} is not set, so the anthropic agent cannot call the model",
                    f"export {API_KEY_VARIABLE}=…, or run with --agent replay",
                )
            ]
    if agent_kind == "replay":
        return [finding for spec in specs for finding in _replay(spec)]
    return []


def _replay(spec: Spec) -> list[Finding]:
    from harness.agents.replay import load_replay, replay_path

    if spec.tier == 3:  # escalated before any agent runs: it needs no trajectory
        return []
    try:
        load_replay(spec)
    except InputError as exc:
        return [
            Finding(
                "error",
                f"spec {spec.id}",
                str(exc),
                f"write a valid {replay_path(spec).name} beside the spec, or use another agent "
                "(--agent)",
            )
        ]
    return []


# --- the store --------------------------------------------------------------------------------


def check_store(url: str) -> list[Finding]:
    """The store answers: PostgreSQL connects; a SQLite file opens, or (not there yet) could
    be created. Nothing is created."""
    from harness.store import open_store, redact_url

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return _creatable(url, path)
    try:
        open_store(url).close()
    except InputError as exc:
        return [Finding("error", "store", str(exc))]
    except Exception as exc:  # a driver's own error: refused, unknown host, bad password
        detail = " ".join(str(exc).split())[:300]
        return [
            Finding(
                "error",
                "store",
                f"{redact_url(url)} cannot be reached: {detail}",
                "start the database or fix the URL (--store, $HARNESS_STORE_URL, store.url)",
            )
        ]
    return []


def _creatable(url: str, path: Path) -> list[Finding]:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return []
    return [
        Finding(
            "error",
            "store",
            f"{url}: {path} cannot be created ({parent} is not a writable directory)",
            "use a writable --runs-dir or --store path",
        )
    ]


# --- the specs and their repositories ----------------------------------------------------------


def check_spec_errors(spec_errors: list[str]) -> list[Finding]:
    """Specs that do not load: a missing repository or base, bad front matter, a repeated id."""
    return [Finding("error", "spec", message) for message in spec_errors]


def check_uncommitted(specs: list[Spec]) -> list[Finding]:
    """A warning for each repository with uncommitted changes: tasks start from the base
    commit, so those changes are not seen by the agent or the gates."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.repo_dir in seen:
            continue
        seen.add(spec.repo_dir)
        changed = GitRepository(Path(spec.git_toplevel)).uncommitted(Path(spec.repo_dir))
        if changed:
            shown = ", ".join(changed[:3]) + (
                f" and {len(changed) - 3} more" if changed[3:] else ""
            )
            findings.append(
                Finding(
                    "warning",
                    f"spec {spec.id}",
                    f"{spec.repo_dir} has uncommitted changes ({shown}); they will not be "
                    f"used: tasks start from commit {spec.base_commit[:12]}",
                    "commit them (and point `base:` at that commit) if the task needs them",
                )
            )
    return findings
