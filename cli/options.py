"""Options more than one command takes: the store (and how its URL is chosen), the policy, the
runs directory, a run's id and its concurrency."""

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

RunsDirOption = Annotated[Path, typer.Option(help="Where runs are recorded.")]

RunIdOption = Annotated[
    str | None,
    typer.Option(help="The run's id, naming its directory and branches. Default: the time."),
]

ConcurrencyOption = Annotated[
    int | None, typer.Option(help="Tasks at once. Default: the policy's concurrency.", min=1)
]


def store_url(option: str | None, policy: Policy | None, runs_dir: Path) -> str:
    return (
        option
        or os.environ.get("HARNESS_STORE_URL")
        or (policy.store.url if policy else None)
        or f"sqlite:///{(runs_dir / 'harness.db').resolve()}"
    )


POLICY_NAMES = (Path("harness.yaml"), Path(".harness") / "policy.yaml")
"""Where a project keeps its policy, looked for upwards from the specs when --policy is not
given."""

PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="The policy YAML. Default: the nearest harness.yaml or .harness/policy.yaml, "
        "looked for from the specs (or the tree checked) upwards.",
    ),
]


def resolve_policy(option: Path | None, starts: list[Path]) -> Path:
    """--policy as given, or the project's policy file found upwards from each of `starts`
    (the specs, or the tree checked); InputError saying how to pass one when there is none."""
    if option is not None:
        return option
    looked: list[Path] = []
    for start in starts or [Path.cwd()]:
        directory = start.resolve()
        if not directory.is_dir():
            directory = directory.parent
        for folder in (directory, *directory.parents):
            for name in POLICY_NAMES:
                if (folder / name).is_file():
                    return Path(os.path.relpath(folder / name))  # as a user would write it
        looked.append(directory)
    from harness.errors import InputError

    where = ", ".join(str(path) for path in dict.fromkeys(looked))
    raise InputError(
        f"no policy given, and no harness.yaml or .harness/policy.yaml in {where} or above it; "
        "pass --policy FILE (e.g. --policy policies/demo.yaml)"
    )
