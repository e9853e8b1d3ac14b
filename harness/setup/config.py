"""Policy's `setup:` section: the commands that make a repository's environment ready."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from pydantic import Field, field_validator

from harness.config.strict import StrictModel
from harness.errors import InputError

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SetupConfig(StrictModel):
    """Commands run once per (repository, base commit, subdir, lockfiles' contents), in a
    sandbox on a detached checkout of the base, before any gate needs what they make."""

    commands: list[str] = Field(min_length=1)
    """Shell commands run in order in the spec's repo directory, stopping at the first that
    fails, e.g. `python3 -m venv $HARNESS_ENV/venv`, `$HARNESS_ENV/venv/bin/pip install -r
    requirements.txt`. `$HARNESS_ENV` is a writable directory at a fixed path (/harness/env)
    that every task's sandbox then sees read-only at the same path, so absolute paths in it
    (a venv's shebangs) keep working."""
    lockfiles: list[str] = []
    """Files (relative to the spec's repo directory) whose contents key the set-up: a task
    whose committed tree changes one gets its own set-up run, e.g. requirements.txt,
    package-lock.json, uv.lock."""
    network: bool = False
    """Whether the set-up may use the host's network (a package index). No other sandboxed
    command gets it."""
    secrets: list[str] = []
    """Names of harness's environment variables passed into the set-up (a private index's
    token); none reach it unless listed, and their values are redacted from every log."""
    copies: list[str] = Field(default=[], alias="copy")
    """Paths the set-up writes into the tree (relative to the repo directory, relocatable,
    git-ignored), e.g. node_modules: copied into each task's tree, a private copy, at the
    start of each gate phase."""
    timeout_s: float = Field(default=1800, gt=0)
    """The whole set-up is killed after this many seconds (an infrastructure failure)."""

    @field_validator("lockfiles", "copies")
    @classmethod
    def _inside_the_repo_dir(cls, paths: list[str]) -> list[str]:
        for path in paths:
            pure = PurePosixPath(path)
            if not path or pure.is_absolute() or ".." in pure.parts or str(pure) == ".":
                raise ValueError(
                    f"{path!r} must be a path inside the spec's repo directory, relative to "
                    "it, e.g. requirements.txt or web/node_modules"
                )
        return paths

    @field_validator("secrets")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        bad = [name for name in names if not re.match(ENV_NAME, name)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: write environment variable names, e.g. NPM_TOKEN"
            )
        return names

    def secret_values(self, source: Path | str) -> dict[str, str]:
        """The listed secrets' values from harness's environment; an InputError naming the
        first one that is not set."""
        for name in self.secrets:
            if name not in os.environ:
                raise InputError(
                    f"{source}: setup.secrets: {name} is not set in harness's environment; "
                    "export it, or remove it from the list"
                )
        return {name: os.environ[name] for name in self.secrets}
