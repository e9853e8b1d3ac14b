"""Preflight of the programs a run's commands start (each gate's, each acceptance command's, a
command agent's): each must resolve inside a real sandbox of the spec's repository at its base.
One that does not is named with where it is on the host, if anywhere, and what would let the
sandbox see it."""

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
from dataclasses import dataclass, replace
from pathlib import Path

from harness.config.policy import AgentKind, Policy
from harness.config.spec import Spec
from harness.git import GitRepository
from harness.preflight import Finding
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import Confinement

RESOLVE_TIMEOUT_S = 30.0
"""One `command -v` inside a sandbox; far more than it takes (milliseconds)."""


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
        if policy.setup is not None:  # what the set-up installs is not there before it runs
            uses = [u for u in uses if not _from_set_up(u.program)]
        if not uses:
            continue
        with base_sandbox(spec, confinement) as sandbox:
            for use in uses:
                command = f"command -v {shlex.quote(use.program)}"
                if sandbox.run(command, timeout_s=RESOLVE_TIMEOUT_S).exit_code != 0:
                    findings.append(_unresolved(use, spec))
    if policy.setup is not None:  # doctor does not run the set-up: it may install the rest
        findings = [
            replace(f, level="warning", fix=f"{f.fix}; unless policy's setup: installs it")
            for f in findings
        ]
    return findings


def _from_set_up(program: str) -> bool:
    """Whether `program` is named by its place in the set-up's environment."""
    return program.startswith(("$HARNESS_ENV", "${HARNESS_ENV}", "/harness/env/"))


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
