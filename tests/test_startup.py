"""What the command line imports: `harness --help` none of the heavy backends, a local run not
the Kubernetes client; and the one-line error naming the optional extra when a policy or a
store URL asks for a backend that is not installed (exit 2, nothing made).

Each check runs the CLI in a fresh interpreter, so modules other tests imported do not count.
No timing is asserted here: bench/startup.py measures it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from helpers import REPO_ROOT, TinyProject

from cli.run import AgentChoice
from harness.config.policy import AgentKind
from harness.errors import InputError
from harness.integration.local import LocalIntegration
from harness.run.gc import collect
from harness.store import EnvRecord, RunRecord, open_store, worker_id

HEAVY = ("langgraph", "kubernetes", "psycopg", "anthropic")
KUBERNETES_EXTRA = (
    "error: integration.backend: kubernetes needs the optional extra: "
    "pip install 'harness[kubernetes]'"
)

# Runs `harness ARGS` in-process after making `blocked` modules unimportable, as if their
# optional extra were not installed (`import name` raises ImportError when sys.modules[name] is
# None), then writes the exit code and every module imported to REPORT.
DRIVER = """
import json, sys
report, blocked, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
for name in blocked:
    sys.modules[name] = None
from cli.main import app
try:
    app(args, prog_name="harness")
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
imported = sorted(name for name, module in sys.modules.items() if module is not None)
with open(report, "w", encoding="utf-8") as out:
    json.dump({"exit": code, "modules": imported}, out)
"""


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    modules: list[str]

    def imported(self, package: str) -> bool:
        return any(name == package or name.startswith(package + ".") for name in self.modules)


def harness(args: list[str], cwd: Path, report: Path, blocked: tuple[str, ...] = ()) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(report), json.dumps(blocked), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report.exists(), f"the driver did not finish:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return Outcome(result["exit"], done.stdout, done.stderr, result["modules"])


def imported_by_console_script(
    args: list[str],
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The installed `harness` script run under `python -X importtime`: every module it
    imported, read from the import-time report on stderr."""
    script = Path(sys.executable).parent / "harness"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return done, modules


# --- fast start -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["check", "--help"]], ids=["help", "check-help"])
def test_help_imports_no_heavy_backend(args: list[str]) -> None:
    done, modules = imported_by_console_script(args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: harness" in done.stdout
    assert {"cli.main", "typer"} <= modules  # the report was read: the CLI's own modules are in it
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"{' '.join(args)} imported {heavy[:10]}"


def test_the_agent_option_offers_exactly_the_policys_agent_kinds() -> None:
    """The CLI spells the choices out (importing the policy's models would slow `--help`)."""
    assert get_args(AgentChoice) == get_args(AgentKind)


def test_a_local_run_never_imports_the_kubernetes_client(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    args = ["run", str(tiny.specs), "--policy", str(tiny.root / "policy.yaml")]
    args += ["--runs-dir", str(tiny.runs), "--run-id", "r1"]

    outcome = harness(args, tiny.root, tiny.root / "report.json")

    assert outcome.exit_code == 0, outcome.stderr
    assert tiny.task("ok")["outcome"] == "verified"
    assert outcome.imported("langgraph")  # the run really went through the workflow
    assert not outcome.imported("kubernetes")


# --- optional extras that are not installed ----------------------------------------------------


def test_a_kubernetes_policy_without_the_extra_exits_2_naming_it(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    policy = tiny.write_policy(name="k8s.yaml", integration={"backend": "kubernetes"})
    args = ["run", str(tiny.specs), "--policy", str(policy), "--runs-dir", str(tiny.runs)]

    outcome = harness(args, tiny.root, tiny.root / "report.json", blocked=("kubernetes",))

    assert outcome.exit_code == 2
    assert outcome.stderr.splitlines() == [KUBERNETES_EXTRA]
    assert not tiny.runs.exists(), "nothing may be made for bad input"


def test_a_sandbox_plan_without_the_kubernetes_extra_exits_2_naming_it(
    tiny: TinyProject,
) -> None:
    spec = tiny.add_spec("ok")
    args = ["sandbox", "plan", str(spec), "--policy", str(tiny.root / "policy.yaml")]

    outcome = harness(args, tiny.root, tiny.root / "report.json", blocked=("kubernetes",))

    assert (outcome.exit_code, outcome.stderr.splitlines()) == (2, [KUBERNETES_EXTRA])


def test_a_postgres_store_without_the_extra_exits_2_naming_it(tmp_path: Path) -> None:
    url = "postgresql://harness:secret@127.0.0.1:1/runs"
    args = ["gc", "--store", url, "--runs-dir", str(tmp_path / "runs")]

    outcome = harness(args, tmp_path, tmp_path / "report.json", blocked=("psycopg",))

    assert outcome.exit_code == 2
    assert outcome.stderr.splitlines() == [
        "error: store url 'postgresql://harness:***@127.0.0.1:1/runs': postgresql:// needs "
        "the optional extra: pip install 'harness[postgres]'"
    ]


def test_the_kubernetes_backend_of_a_run_is_made_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's integration stacks never import the client until a gate asks for the backend;
    asked for without the extra, the backend names it."""
    services = LocalIntegration()
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    services.release("t")  # teardown and the run's end do not need it either
    services.stop()
    with pytest.raises(InputError) as caught:
        services.kubernetes  # noqa: B018 (reading the property makes the backend)
    assert f"error: {caught.value}" == KUBERNETES_EXTRA


def test_gc_without_the_kubernetes_extra_says_why_it_reaped_nothing_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead run whose policy used the Kubernetes backend: gc cannot look for its objects
    without the client, and its action says so (the rest of gc goes on)."""
    store = open_store(f"sqlite:///{tmp_path / 'harness.db'}")
    try:
        policy = (
            "gates: [{name: t, kind: test, command: 'true'}]\nintegration: {backend: kubernetes}\n"
        )
        run = RunRecord(run_id="r1", run_dir=str(tmp_path), policy_path="p", policy_text=policy)
        store.create_run(run, ["t"])
        env = EnvRecord(
            env_id="r1/t", run_id="r1", spec_id="t", kind="worktree", expires_at=time.time()
        )
        store.allocate_env(env)
        monkeypatch.setitem(sys.modules, "kubernetes", None)
        actions = collect(store, tmp_path / "runs", owner=worker_id(), dry_run=True)
    finally:
        store.close()
    [kubernetes] = [action for action in actions if action.kind == "kubernetes"]
    assert (kubernetes.target, kubernetes.done) == ("r1", False)
    assert kubernetes.why == f"not reaped: {KUBERNETES_EXTRA.removeprefix('error: ')}"


def test_the_store_names_the_postgres_extra_for_a_missing_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backend module is imported afresh, as by a process without the extra.
    monkeypatch.delitem(sys.modules, "harness.store.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(
        InputError, match=r"needs the optional extra: pip install 'harness\[postgres"
    ):
        open_store("postgresql://u@127.0.0.1:1/db")
