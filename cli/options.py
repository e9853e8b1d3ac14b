"""Options more than one command takes: the store, and how its URL is chosen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from harness.config.policy import Policy

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL (sqlite:///… or postgresql://…). Default: $HARNESS_STORE_URL, the "
        "policy's store.url, then sqlite under --runs-dir.",
    ),
]


def store_url(option: str | None, policy: Policy | None, runs_dir: Path) -> str:
    return (
        option
        or os.environ.get("HARNESS_STORE_URL")
        or (policy.store.url if policy else None)
        or f"sqlite:///{(runs_dir / 'harness.db').resolve()}"
    )
