"""The layering contract (pyproject.toml's [tool.importlinter]): harness/ imports neither
graphs/ nor cli/, and graphs/ does not import cli/. Checked on this tree, and shown to fail on
a small tree that breaks it, so a pass here means something."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT

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
