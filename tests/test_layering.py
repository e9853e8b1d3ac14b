"""The layering: the CLI is the composition root. The contract (pyproject.toml's
[tool.importlinter]: harness/ imports neither graphs/ nor cli/, and graphs/ does not import
cli/) is checked on this tree, and shown to fail on a small tree that breaks it, so a pass here
means something. The CLI imports its workflow directly: none is named by reference any more,
on the command line or in the store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from helpers import REPO_ROOT, TinyProject, run_cli

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # No cache: it would be written into the checkout (.import_linter_cache).
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contracts_section(pyproject: str) -> str:
    """The [tool.importlinter] tables of a pyproject.toml, as they are written there."""
    lines = pyproject.splitlines()
    start = lines.index("[tool.importlinter]")
    end = next(
        (
            n
            for n in range(start + 1, len(lines))
            if lines[n].startswith("[") and "tool.importlinter" not in lines[n]
        ),
        len(lines),
    )
    return "\n".join(lines[start:end]) + "\n"


def test_the_tree_keeps_the_layering_contract() -> None:
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_the_contract_reports_an_engine_or_workflow_that_imports_upward(tmp_path: Path) -> None:
    """The real contracts, on packages named like ours: the engine importing a workflow inside
    a function (as the CLI imports lazily, so such an import is no hiding place), and the
    workflow importing the CLI."""
    for package, source in {
        "harness": {"engine.py": "def run() -> None:\n    from graphs import workflow\n"},
        "graphs": {"workflow.py": "import cli.main\n"},
        "cli": {"main.py": "import harness.engine\n"},
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
        for name, text in source.items():
            (tmp_path / package / name).write_text(text, encoding="utf-8")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(contracts_section(pyproject), encoding="utf-8")
    # These packages, not the installed ones: PYTHONPATH comes before the editable install.
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    done = lint_imports(tmp_path, env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Contracts: 0 kept, 2 broken." in done.stdout, done.stdout
    assert "harness.engine -> graphs" in done.stdout
    assert "graphs.workflow -> cli.main" in done.stdout


def test_no_workflow_is_named_on_the_command_line_or_in_the_store(tiny: TinyProject) -> None:
    tiny.add_spec("ok")
    named = tiny.run("--workflow", "graphs.batch:run_batch")
    assert named.exit_code == 2 and "No such option" in named.stderr
    assert tiny.run().exit_code == 0
    with closing(sqlite3.connect(tiny.runs / "harness.db")) as db:
        [(options,)] = db.execute("SELECT options FROM harness_runs WHERE run_id = 'r1'")
        assert "workflow" not in json.loads(options)


def test_a_run_recorded_with_a_workflow_reference_resumes_ignoring_it(tiny: TinyProject) -> None:
    """Runs recorded before kept the workflow's reference in their options; one that no longer
    loads (or any other) is ignored: there is one workflow, graphs.batch."""
    tiny.add_spec("ok")
    assert tiny.run().exit_code == 0
    with closing(sqlite3.connect(tiny.runs / "harness.db")) as db, db:
        [(options,)] = db.execute("SELECT options FROM harness_runs WHERE run_id = 'r1'")
        old = json.loads(options) | {"workflow": "no_such_module:run_batch"}
        db.execute("UPDATE harness_runs SET options = ? WHERE run_id = 'r1'", (json.dumps(old),))

    resumed = run_cli(["resume", "r1", "--runs-dir", str(tiny.runs)], cwd=tiny.root)

    assert resumed.exit_code == 0, resumed.stderr
    assert "1 of 1 task already done" in resumed.stdout
    assert tiny.task("ok")["outcome"] == "verified"
