"""A flaky re-run of a pytest gate that runs only the tests that failed, by their node ids.

Sandboxes run pytest with its cache plugin off (`harness.sandbox.PYTEST_ADDOPTS`), so nothing
the agent's code left in a cache decides what runs. For a re-run harness turns the plugin on
with a cache of its own: a fresh directory in the sandbox's scratch (mkdtemp: a random name,
mode 0700) holding `v/cache/lastfailed`, the node ids harness measured failing in the run
before (from that run's JUnit report), and `-o cache_dir=<it> --last-failed`. pytest then runs
those tests only. A list it cannot use (no id matches, the file is unreadable, the project's
ini turns the plugin off) makes it run the whole suite: slower, never laxer. A gate command
that turns the plugin off itself makes pytest refuse `--last-failed` (a usage error, no
report): the runner then re-runs the whole gate.

The verdict does not trust the selection: a test that failed counts as flaky only when the
re-run's own report shows it passed (harness.gates.runner).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from harness.sandbox import PYTEST_ADDOPTS

CACHE_PLUGIN_OFF = "-p no:cacheprovider"
FAILED_OUTCOMES = ("failed", "error")


def failed_tests(outcomes: Mapping[str, str]) -> list[str]:
    """The node ids that failed or errored (a collection error's id is its file), sorted."""
    return sorted(test for test, outcome in outcomes.items() if outcome in FAILED_OUTCOMES)


@contextlib.contextmanager
def pytest_options(scratch: Path, only: Sequence[str]) -> Iterator[str]:
    """The PYTEST_ADDOPTS of a gate run: the sandbox's own, or, when `only` names tests, a
    cache made fresh in `scratch` that lists them as pytest's last failures and the options
    that run just those. The cache is removed afterwards (shutil.rmtree, which follows no
    symlink the gate may have left in it)."""
    if not only:
        yield PYTEST_ADDOPTS
        return
    cache = Path(tempfile.mkdtemp(prefix="pytest-cache-", dir=scratch))
    try:
        (cache / "v" / "cache").mkdir(parents=True)
        listing = json.dumps(dict.fromkeys(only, True), indent=2, sort_keys=True)
        (cache / "v" / "cache" / "lastfailed").write_text(listing, encoding="utf-8")
        others = PYTEST_ADDOPTS.replace(CACHE_PLUGIN_OFF, "").strip()
        yield f"{others} -o cache_dir={cache} --last-failed"
    finally:
        shutil.rmtree(cache, ignore_errors=True)
