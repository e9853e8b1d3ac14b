"""Preflight: what a run needs, checked without running any agent (`harness doctor`,
`harness run --dry-run`, and the cheap part at the start of every `harness run`).

Each check is one small function returning `Finding`s: an error (the run would fail or run
unconfined), a warning (it would run, but not as the user may think), or nothing. Every finding
says what is wrong and how to fix it, on one line.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.config.policy import AgentKind, Policy
from harness.config.spec import Spec
from harness.errors import InputError
from harness.git import GitRepository
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import Confinement

Level = Literal["error", "warning"]

RESOLVE_TIMEOUT_S = 30.0
"""One `command -v` inside a sandbox; far more than it takes (milliseconds)."""


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


# --- the tools commands need, as a sandbox sees them ------------------------------------------


def first_word(command: str) -> str | None:
    """The program a shell command starts (after any VAR=value assignments), or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for word in words:
        if "=" in word and not word.startswith(("/", ".")) and word.split("=", 1)[0].isidentifier():
            continue
        return word
    return None


@dataclass(frozen=True)
class ToolUse:
    """A program some command of the run starts: `subject` names the command for the user."""

    subject: str
    program: str
    where: str
    """The policy or spec field holding the command, for the fix (e.g. `gates[0].command`)."""


def tool_uses(policy: Policy, agent_kind: AgentKind, spec: Spec | None) -> list[ToolUse]:
    """The programs a task would start: each gate's, each of the spec's acceptance commands,
    and a command agent's."""
    uses: list[ToolUse] = []
    for n, gate in enumerate(policy.gates):
        program = first_word(gate.command)
        if program:
            uses.append(ToolUse(f"gate {gate.name}", program, f"gates[{n}].command"))
    for n, command in enumerate(spec.acceptance if spec else []):
        program = first_word(command)
        if program and spec:
            uses.append(ToolUse(f"spec {spec.id}", program, f"acceptance[{n}] of {spec.source}"))
    if agent_kind == "command" and policy.agent.command:
        uses.append(ToolUse("agent", policy.agent.command[0], "agent.command[0]"))
    return uses


@contextmanager
def base_sandbox(spec: Spec | None, confinement: Confinement) -> Iterator[ConfinedDirectory]:
    """A real sandbox over the spec's repository as it is at its base commit (exported with
    `git archive`, so the repository gains no worktree), or over an empty directory when
    there is no spec; removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="harness-doctor-"))
    try:
        tree, scratch = home / "tree", home / "scratch"
        tree.mkdir()
        scratch.mkdir()
        cwd = tree
        if spec is not None:
            archive = GitRepository(Path(spec.git_toplevel)).archive(spec.base_commit)
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tree, filter="data")
            cwd = tree / spec.subdir
            cwd.mkdir(parents=True, exist_ok=True)
        yield ConfinedDirectory(
            tree, cwd, scratch, limits=confinement.limits, read_paths=confinement.read_paths
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def check_tools(
    policy: Policy, agent_kind: AgentKind, specs: list[Spec], confinement: Confinement
) -> list[Finding]:
    """Each program a task would start resolves inside a real sandbox of its repository at
    its base (`command -v`); one finding per program that does not, per repository. With no
    specs, the policy's programs are looked for in a sandbox over an empty directory."""
    findings: list[Finding] = []
    seen: set[tuple[str, str, str]] = set()
    candidates: list[Spec | None] = [*specs] or [None]
    for spec in candidates:
        uses = [u for u in tool_uses(policy, agent_kind, spec) if _new(seen, spec, u)]
        if not uses:
            continue
        with base_sandbox(spec, confinement) as sandbox:
            for use in uses:
                command = f"command -v {shlex.quote(use.program)}"
                if sandbox.run(command, timeout_s=RESOLVE_TIMEOUT_S).exit_code != 0:
                    findings.append(_unresolved(use, spec))
    return findings


def _new(seen: set[tuple[str, str, str]], spec: Spec | None, use: ToolUse) -> bool:
    """Whether `use` still needs looking up: a program named by a relative path is looked up
    in each repository and base, any other (on PATH, or absolute) once."""
    relative = "/" in use.program and not use.program.startswith("/")
    key = (
        (spec.repo_dir, spec.base_commit, use.program)
        if spec and relative
        else ("", "", use.program)
    )
    if key in seen:
        return False
    seen.add(key)
    return True


def _unresolved(use: ToolUse, spec: Spec | None) -> Finding:
    """Why `use.program` is not found inside the sandbox: it is somewhere the sandbox's view
    does not include (then the read path to add), or it is nowhere."""
    on_host = host_location(use.program, Path(spec.repo_dir) if spec else Path.cwd())
    inside = f"`{use.program}` is not found inside the sandbox"
    if spec is not None:
        inside += f" of {spec.repo_dir}"
    if on_host is None:
        return Finding(
            "error",
            use.subject,
            f"{inside} nor on this host",
            f"install it (e.g. into harness's venv: {Path(sys.executable).parent}/pip install "
            f"…), or change {use.where}",
        )
    if spec is not None and Path(on_host).is_relative_to(spec.git_toplevel):
        return Finding(
            "error",
            use.subject,
            f"{inside}: it is {on_host}, in the repository's working tree but not committed at "
            f"base {spec.base_commit[:12]} (tasks see committed files only)",
            f"install it where sandboxes can see it (harness's venv, /usr), or add its "
            f"directory to the policy's sandbox.read_paths: [{_venv_root(on_host)}]",
        )
    # A link (/usr/local/bin/tool -> /opt/tool/bin/tool) is there, its target is not.
    real = os.path.realpath(on_host)
    roots = [] if _in_view(Path(on_host)) else [_venv_root(on_host)]
    if real != on_host and not _in_view(Path(real)):
        roots.append(_venv_root(real))
        on_host = f"{on_host} (a link to {real})"
    roots = roots or [_venv_root(on_host)]
    return Finding(
        "error",
        use.subject,
        f"{inside}: it is {on_host}, which the sandbox's view does not include",
        f"add it to the policy: sandbox: {{read_paths: [{', '.join(roots)}]}}, or install "
        f"the tool where sandboxes see it (harness's venv, /usr)",
    )


def _in_view(path: Path) -> bool:
    """Whether every sandbox sees `path`: under the system's toolchain directories or
    harness's own Python."""
    return any(path.is_relative_to(d) for d in [*bwrap.SYSTEM_DIRS, *bwrap.needed_host_paths()])


def host_location(program: str, cwd: Path) -> str | None:
    """Where `program` is on this host: a path (relative to `cwd`), or on harness's venv and
    the host's PATH, as a sandboxed command's PATH has them."""
    if "/" in program:
        path = cwd / program
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(program, path=search)


def _venv_root(program: str) -> str:
    """The directory to add as a read path: a virtualenv's root (pyvenv.cfg beside its bin/),
    else the program's directory."""
    directory = Path(program).parent
    if (directory.parent / "pyvenv.cfg").is_file():
        return str(directory.parent)
    return str(directory)


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
