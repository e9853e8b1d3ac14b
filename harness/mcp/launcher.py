"""Runs and fleets that `harness mcp` starts: each is an ordinary `harness run` (or `harness
fleet`) in a process of its own, with a run id chosen here so the tool can answer at once.

A process per run, not a thread: the run is the same durable run the CLI makes (its store
records, its summary, `harness resume` continues it), its SIGTERM handling is the CLI's (tasks
stop cleanly, end `interrupted`, resumable), and nothing it prints reaches the MCP stream (its
output goes to runs/.mcp/<run-id>.log; stdin is /dev/null).

What the client may name is checked here first, in-process, so a bad argument is a tool error
naming it rather than a run that dies: spec and policy files must lie inside the project, an
inline spec may not carry `acceptance:` commands (only files the engineer keeps name commands;
the MCP server never runs a client's command), and every spec's repository must lie inside
the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import frontmatter
from mcp.server.mcpserver.exceptions import ToolError

from harness.config.policy import load_policy
from harness.config.spec import load_specs
from harness.errors import InputError
from harness.run.context import new_run_id

CANCEL_WAIT_S = 60.0
"""How long `cancel` waits for the run's process to stop cleanly before it answers; the run
keeps stopping afterwards (its status says when)."""


@dataclass
class RunLauncher:
    """Starts runs as subprocesses of `command` (e.g. `python -m cli.main`), remembers them by
    run id, and stops them on `cancel`."""

    root: Path
    runs_dir: Path
    command: list[str]
    store_url: str | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def scratch(self) -> Path:
        """runs/.mcp: inline specs and the runs' own output (not a run: no events or summary)."""
        return self.runs_dir / ".mcp"

    def start_run(
        self,
        spec_paths: list[str],
        spec_text: str | None,
        policy: str,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        """(run id, whether this call started it): a key seen before answers its run."""
        specs = self._specs(spec_paths, spec_text)
        policy_path = self._inside("policy", policy)
        try:
            loaded = load_policy(policy_path)
        except InputError as exc:
            raise ToolError(f"policy: {exc}") from None
        del loaded
        return self._launch(
            ["run", *map(str, specs), "--policy", str(policy_path)], idempotency_key
        )

    def start_fleet(
        self,
        spec_path: str,
        n: int,
        vary: list[str],
        first_verified: bool,
        policy: str,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        [spec] = self._specs([spec_path], None)
        policy_path = self._inside("policy", policy)
        if n < 1:
            raise ToolError(f"n: {n} variants; a fleet needs at least 1")
        argv = ["fleet", str(spec), "-n", str(n), "--policy", str(policy_path)]
        for item in vary:
            argv += ["--vary", item]
        if first_verified:
            argv.append("--first-verified")
        return self._launch(argv, idempotency_key)

    def promote(
        self, run_id: str, spec_id: str, variant: int | None, force: bool
    ) -> tuple[int, str]:
        """`harness promote` of a fleet's variant, to its end (a publish is short): its exit
        code and output."""
        argv = [*self.command, "promote", run_id, spec_id, "--runs-dir", str(self.runs_dir)]
        argv += ["--variant", str(variant)] if variant is not None else []
        argv += ["--force"] if force else []
        argv += ["--store", self.store_url] if self.store_url is not None else []
        done = subprocess.run(
            argv,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def process_state(self, run_id: str) -> dict[str, object] | None:
        """This server's process of the run: running, or its exit code and last output line."""
        with self._lock:
            process = self._processes.get(run_id)
        if process is None:
            return None
        code = process.poll()
        state: dict[str, object] = {"running": code is None, "exit_code": code}
        if code is not None and code not in (0, 130, 143):
            lines = self.output(run_id).strip().splitlines()
            state["last_output"] = lines[-1] if lines else ""
        return state

    def output(self, run_id: str) -> str:
        try:
            return (self.scratch / f"{run_id}.log").read_text("utf-8", errors="replace")
        except OSError:
            return ""

    def cancel(self, run_id: str) -> bool:
        """SIGTERM to the run's process (its tasks stop cleanly and stay resumable), then wait
        for it; False when this server has no live process for it (finished, or not ours)."""
        with self._lock:
            process = self._processes.get(run_id)
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(CANCEL_WAIT_S)
        return True

    def stop_all(self) -> None:
        """When the server stops: its runs get SIGTERM and stop cleanly (resumable)."""
        with self._lock:
            live = [p for p in self._processes.values() if p.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        for process in live:
            try:
                process.wait(CANCEL_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()

    # --- internals ----------------------------------------------------------------------------

    def _launch(self, argv: list[str], idempotency_key: str | None) -> tuple[str, bool]:
        with self._lock:
            if idempotency_key is not None:
                if not idempotency_key.strip():
                    raise ToolError("idempotency_key: empty; pass a non-empty key, or none")
                run_id = "mcp-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
                if run_id in self._processes or (self.runs_dir / run_id).exists():
                    return run_id, False
            else:
                run_id = new_run_id()
            self.scratch.mkdir(parents=True, exist_ok=True)
            argv = [*self.command, *argv, "--runs-dir", str(self.runs_dir), "--run-id", run_id]
            if self.store_url is not None:
                argv += ["--store", self.store_url]
            with (self.scratch / f"{run_id}.log").open("wb") as out:
                self._processes[run_id] = subprocess.Popen(
                    argv,
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own session: a terminal's Ctrl-C of the server is not the run's.
                    start_new_session=True,
                    env={**os.environ, "NO_COLOR": "1"},
                )
        self._wait_for_run_dir(run_id)
        return run_id, True

    def _wait_for_run_dir(self, run_id: str, timeout_s: float = 30.0) -> None:
        """Until the run's directory exists (so get_status knows it) or its process ended (its
        status then says why): a few seconds of start-up, not the run."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            process = self._processes[run_id]
        while time.monotonic() < deadline and process.poll() is None:
            if (self.runs_dir / run_id / "events.jsonl").exists():
                return
            time.sleep(0.05)

    def _inside(self, argument: str, named: str, *, folders: bool = False) -> Path:
        """A file (or, for specs, a folder) the client names, resolved against the project;
        ToolError outside it (a symlink is judged by where it leads)."""
        path = (self.root / named).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ToolError(f"{argument}: {named!r} is outside the project; name a file in it")
        if not (path.is_file() or (folders and path.is_dir())):
            raise ToolError(f"{argument}: no file {named!r} in the project")
        return path

    def _specs(self, spec_paths: list[str], spec_text: str | None) -> list[Path]:
        if bool(spec_paths) == (spec_text is not None):
            raise ToolError("spec_paths, spec_text: pass spec files or one inline spec, not both")
        paths = [self._inside("spec_paths", named, folders=True) for named in spec_paths]
        argument = "spec_paths"
        if spec_text is not None:
            argument = "spec_text"
            paths = [self._inline(spec_text)]
        try:
            loaded = load_specs(paths)
        except InputError as exc:
            raise ToolError(f"{argument}: {exc}") from None
        if loaded.errors:
            raise ToolError(f"{argument}: {loaded.errors[0]}")
        root = self.root.resolve()
        for spec in loaded.specs:
            if not Path(spec.git_toplevel).resolve().is_relative_to(root):
                raise ToolError(f"{argument}: spec {spec.id}'s repo is outside the project")
        return paths

    def _inline(self, text: str) -> Path:
        """The inline spec as a file under runs/.mcp/specs (a run records its specs' paths);
        a relative `repo:` is taken from the project's directory."""
        try:
            post = frontmatter.loads(text)
        except Exception as exc:  # yaml's errors have no common base worth naming
            raise ToolError(f"spec_text: its front matter is not YAML: {exc}") from None
        if post.metadata.get("acceptance"):
            raise ToolError(
                "spec_text: acceptance: commands are not taken from MCP clients; put them in a "
                "spec file in the project and pass spec_paths"
            )
        repo = post.metadata.get("repo")
        if isinstance(repo, str) and not Path(repo).is_absolute():
            post.metadata["repo"] = str((self.root / repo).resolve())
        rendered = frontmatter.dumps(post) + "\n"
        folder = self.scratch / "specs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(rendered.encode()).hexdigest()[:16]}.md"
        path.write_text(rendered, "utf-8")
        return path
