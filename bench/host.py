"""What the benchmarks ran on, and how busy it was: figures mean little without both."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    output = (done.stdout or done.stderr).strip()
    return output.splitlines()[0] if output else "not available"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "bwrap": _first_line(["bwrap", "--version"]),
        "git": _first_line(["git", "--version"]),
    }


def load() -> dict[str, float]:
    """Load averages, and CPU pressure (PSI "some", % of time) over the last 10 s and 60 s."""
    figures: dict[str, float] = {}
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3]
        figures |= {"load1": float(one), "load5": float(five), "load15": float(fifteen)}
    except (OSError, ValueError):
        pass
    try:
        some = Path("/proc/pressure/cpu").read_text(encoding="utf-8").splitlines()[0]
        fields = dict(item.split("=") for item in some.split()[1:])
        figures |= {"cpu_psi10": float(fields["avg10"]), "cpu_psi60": float(fields["avg60"])}
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return figures


def describe_load(before: dict[str, float], after: dict[str, float]) -> str:
    def one(figures: dict[str, float]) -> str:
        text = f"load1 {figures.get('load1', float('nan')):.2f}"
        if "cpu_psi10" in figures:
            text += f", cpu pressure {figures['cpu_psi10']:.0f}%"
        return text

    return f"host before: {one(before)}; after: {one(after)}"


def report(
    result: dict[str, Any], markdown: Callable[[dict[str, Any]], str], json_path: Path | None
) -> int:
    """A benchmark's ending: its figures printed as Markdown and, with --json, written with
    the machine they were measured on. Returns the exit code."""
    result = result | {"machine": machine()}
    print(markdown(result))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
