"""Environment set-up, once per base: policy's `setup:` commands run in a sandbox on a detached
checkout of the base, and every task's gates (and base runs) see what they made.

A venv holds absolute paths (shebangs, editable installs), so it works only where it was made.
The set-up therefore writes into a directory bound at a fixed path inside its sandbox
(`/harness/env`, `$HARNESS_ENV`), and every later sandbox gets that same directory bound
read-only at the same path: its absolute paths work, and no task can change what another
sees. Relocatable outputs the set-up writes into the tree (`copy:`, e.g. node_modules) are
copied into each task's tree at each gate phase's start, inside the task's sandbox, so a link
the agent committed is never followed on the host.

One set-up per key: (repository, base commit, subdir, the set-up's config, the lockfiles'
contents). A task whose committed tree changes a lockfile gets its own set-up, on its own
commit, keyed by the new contents and its spec id (later attempts with the same lockfiles
reuse it). Tasks needing the same key wait for its one run (a file lock per key, so workers
sharing the run directory wait too). Results live under the run's directory
(runs/<run-id>/setup/<key>/: env/, copy/, setup.log, result.json), so `harness resume`
reuses them and `harness gc` removes them with the run; another run sets up afresh, since
the host's toolchain and the package index may have changed since.

A failing set-up is infrastructure, never the agent's: the gate phase's first gate records it
(harness.gates.runner's GateSetupError), and the task escalates with the log's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shlex
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness import redact
from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.errors import InputError
from harness.gates.record import excerpt
from harness.gates.runner import GateEnvironment, GatePrepare, GateSetupError
from harness.git import GitRepository, Worktree
from harness.problems import Problem, problem_type
from harness.run.ledger import write_atomic
from harness.sandbox import TaskSandbox
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.lifecycle import clear_detached
from harness.sandbox.limits import DEFAULT_CONFINEMENT, Confinement
from harness.sandbox.local import WorktreeSandbox
from harness.setup.config import SetupConfig

ENV_PATH = Path("/harness/env")
"""Where the set-up's environment directory is, inside every sandbox (`$HARNESS_ENV`)."""
ENV_VAR = "HARNESS_ENV"
COPY_PATH = Path("/harness/setup-copy")
"""Where the set-up's `copy:` outputs are, inside sandboxes (`$HARNESS_SETUP_COPY`)."""
COPY_VAR = "HARNESS_SETUP_COPY"
COPY_TIMEOUT_S = 600


@dataclass(frozen=True)
class Prepared:
    """A gate phase's environment: ready, or why it could not be made ready."""

    error: GateSetupError | None = None

    def then(self, prepare: GatePrepare) -> GatePrepare:
        """`prepare`, preceded by this: a set-up that failed fails each gate run as
        infrastructure (the runner stops at the first), with the set-up's log."""

        def prepared(gate: GateConfig) -> GateEnvironment:
            if self.error is not None:
                raise self.error
            return prepare(gate)

        return prepared

    def problem(self) -> Problem | None:
        """The failure as the problem an escalation lists (None when ready)."""
        if self.error is None:
            return None
        log = str(self.error.log) if self.error.log else None
        return Problem(
            type=problem_type("setup-failed"),
            title=self.error.title[:1].upper() + self.error.title[1:],
            detail=f"{self.error.detail}\n\nA person must act: {self.error.todo}.",
            category="infrastructure",
            retryable=True,
            owner_action_required=True,
            log=log,
        )


@dataclass(frozen=True)
class Built:
    """One finished set-up."""

    directory: Path
    duration_s: float

    @property
    def env(self) -> Path:
        return self.directory / "env"

    @property
    def copies(self) -> Path:
        return self.directory / "copy"


class EnvironmentSetup:
    """The run's set-ups, one per key, shared by every task and base run."""

    def __init__(
        self,
        config: SetupConfig | None,
        root: Path,
        confinement: Confinement = DEFAULT_CONFINEMENT,
        source: Path | str = "policy",
    ) -> None:
        self.config = config
        self.root = root
        """runs/<run-id>/setup: one directory per key, and index.jsonl (one line per set-up
        run: key, commit, duration, whether it worked, its log)."""
        self.confinement = confinement
        self.source = source
        self._failed: dict[str, GateSetupError] = {}
        self._guard = threading.Lock()

    def ready(self, spec: Spec, sandbox: TaskSandbox) -> Prepared:
        """The task's sandbox made ready for a gate phase: the set-up for its committed tree
        run (or reused), its environment bound read-only at /harness/env, and its `copy:`
        outputs copied into the tree afresh. Called at the start of every gate phase."""
        config = self.config
        if config is None:
            return Prepared()
        try:
            if not isinstance(sandbox, ConfinedDirectory):
                raise GateSetupError(
                    "set-up needs a local sandbox",
                    f"policy's setup: is supported by the local sandbox only, not {sandbox!r}",
                    "remove setup: from the policy, or run tasks in local sandboxes",
                )
            built = self._built_for(spec, sandbox.worktree, config)
            sandbox.mount(built.env, ENV_PATH, env=ENV_VAR, on_path=True)
            if config.copies:
                sandbox.mount(built.copies, COPY_PATH, env=COPY_VAR)
                self._copy_into(sandbox, config, built.directory / f"copy-{spec.id}.log")
        except GateSetupError as error:
            return Prepared(error)
        return Prepared()

    def _built_for(self, spec: Spec, worktree: Worktree, config: SetupConfig) -> Built:
        head = worktree.head()
        on_base = _lockfile_hashes(worktree, spec, spec.base_commit, config.lockfiles)
        on_head = _lockfile_hashes(worktree, spec, head, config.lockfiles)
        if on_head == on_base:
            return self._once(spec, spec.base_commit, on_base, owner=None)
        return self._once(spec, head, on_head, owner=spec.id)  # the agent changed a lockfile

    def _once(
        self, spec: Spec, commit: str, lockfiles: dict[str, str | None], owner: str | None
    ) -> Built:
        assert self.config is not None
        ident = [
            spec.git_toplevel,
            spec.base_commit,
            str(spec.subdir),
            self.config.model_dump_json(),
            lockfiles,
            owner,
        ]
        key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
        directory = self.root / key
        with _exclusive(self.root / f"{key}.lock"):
            with self._guard:
                failed = self._failed.get(key)
            if failed is not None:  # once per run: the tasks waiting on it do not re-run it
                raise failed
            done = directory / "result.json"
            if done.is_file():
                return Built(directory, json.loads(done.read_text("utf-8"))["duration_s"])
            try:
                return self._run(spec, commit, key, directory, agent_changed=owner is not None)
            except GateSetupError as error:
                with self._guard:
                    self._failed[key] = error
                raise

    def _run(
        self, spec: Spec, commit: str, key: str, directory: Path, *, agent_changed: bool
    ) -> Built:
        config = self.config
        assert config is not None
        repository = GitRepository(Path(spec.git_toplevel))
        tree, scratch = directory / "tree", directory / "scratch"
        # What a crashed set-up left, its half-made environment too: it runs afresh.
        clear_detached(repository, directory)
        shutil.rmtree(directory, ignore_errors=True)
        log = directory / "setup.log"
        try:
            # A lockfile the agent changed makes the set-up run what the agent chose (an
            # install script, a package from anywhere): it never gets the policy's secrets.
            secrets = {} if agent_changed else config.secret_values(self.source)
        except InputError as exc:
            raise GateSetupError(
                "a secret it lists is not set", str(exc), "set it, then `harness resume`"
            ) from None
        redact.remember(secrets)  # before anything is written: the log is redacted as it goes
        for made in (directory / "env", directory / "copy", scratch):
            made.mkdir(parents=True)
        repository.add_worktree(tree, None, commit)
        sandbox = WorktreeSandbox(
            repository,
            tree,
            tree / spec.subdir,
            scratch,
            keeps_work=False,
            confinement=self.confinement,
        )
        sandbox.network = config.network
        sandbox.mount(directory / "env", ENV_PATH, writable=True, env=ENV_VAR, on_path=True)
        sandbox.mount(directory / "copy", COPY_PATH, writable=True, env=COPY_VAR)
        started = time.monotonic()
        try:
            done = sandbox.run(_script(config), config.timeout_s, log, env=secrets)
        finally:
            sandbox.teardown()
        duration_s = time.monotonic() - started
        ok = done.exit_code == 0 and not done.timed_out
        self._index(key, spec, commit, duration_s, ok, log)
        if not ok:
            ending = (
                f"timed out after {config.timeout_s:g} s"
                if done.timed_out
                else (f"exit {done.exit_code}")
            )
            raise GateSetupError(
                f"environment set-up failed ({ending}); its log: {log}",
                excerpt(done.output),
                f"read the set-up's log ({log}), fix policy's setup: (or what it installs), "
                "then `harness resume` the run",
                log,
            )
        write_atomic(directory / "result.json", json.dumps({"duration_s": duration_s}))
        return Built(directory, duration_s)

    def _index(
        self, key: str, spec: Spec, commit: str, duration_s: float, ok: bool, log: Path
    ) -> None:
        line = {
            "key": key,
            "spec": spec.id,
            "repository": spec.git_toplevel,
            "commit": commit,
            "base": commit == spec.base_commit,
            "duration_s": round(duration_s, 3),
            "ok": ok,
            "log": str(log),
        }
        with (self.root / "index.jsonl").open("a", encoding="utf-8") as index:
            index.write(json.dumps(line) + "\n")

    def _copy_into(self, sandbox: ConfinedDirectory, config: SetupConfig, log: Path) -> None:
        """The set-up's `copy:` outputs copied into the task's tree, replacing what is there.
        Inside the sandbox: whatever the agent put at those paths (a link out of the tree)
        is removed or followed only where the sandbox confines it."""
        lines = ["set -e"]
        for path in config.copies:
            quoted, parent = shlex.quote(path), shlex.quote(str(PurePosixPath(path).parent))
            lines += [
                f"rm -rf -- {quoted}",
                f"mkdir -p -- {parent}",
                f'cp -a -- "${COPY_VAR}"/{quoted} {quoted}',
            ]
        done = sandbox.run("\n".join(lines), COPY_TIMEOUT_S, log)
        if done.exit_code != 0 or done.timed_out:
            raise GateSetupError(
                f"the set-up's outputs could not be copied into the task's tree; its log: {log}",
                excerpt(done.output),
                f"read {log}; check policy's setup.copy paths",
                log,
            )


def _script(config: SetupConfig) -> str:
    """The set-up as one shell script: each command in its own `sh -c` in the repo directory,
    the first failure ends it; then the `copy:` outputs saved beside the environment."""
    lines: list[str] = []
    for n, command in enumerate(config.commands, start=1):
        lines += [
            f"printf '%s\\n' {shlex.quote(f'+ {command}')}",
            f"/bin/sh -c {shlex.quote(command)} || {{ rc=$?; "
            f"echo 'harness: set-up command {n} failed (exit '$rc')'; exit $rc; }}",
        ]
    for path in config.copies:
        quoted, parent = shlex.quote(path), shlex.quote(str(PurePosixPath(path).parent))
        lines += [
            f"[ -e {quoted} ] || {{ echo 'harness: setup.copy: '{quoted}' was not made by "
            "the set-up commands'; exit 3; }",
            # Else every task's commit would take it: the copy belongs in no commit.
            f"git check-ignore -q -- {quoted} || {{ echo 'harness: setup.copy: '{quoted}' is "
            "not git-ignored; add it to .gitignore'; exit 3; }",
            f'mkdir -p -- "${COPY_VAR}"/{parent} && cp -a -- {quoted} "${COPY_VAR}"/{quoted}',
        ]
    return "\n".join(lines)


def _lockfile_hashes(
    worktree: Worktree, spec: Spec, commit: str, lockfiles: list[str]
) -> dict[str, str | None]:
    """Each lockfile's sha256 in `commit` (None when it has none), read from git's objects,
    never from the agent's tree on disk."""
    hashes: dict[str, str | None] = {}
    for name in lockfiles:
        text = worktree.read_file(commit, str(PurePosixPath(spec.subdir) / name))
        hashes[name] = None if text is None else hashlib.sha256(text.encode()).hexdigest()
    return hashes


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Held by one thread or process at a time: flock locks an open file description, so
    two threads of one process each opening the file exclude each other too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
