"""triggers.yaml: which webhooks `harness serve` listens to, and where their tickets' work goes.

    workers: 2
    github:
      path: /webhooks/github        # where GitHub posts (this is the default)
      secret_env: GITHUB_WEBHOOK_SECRET
      label: harness                # issues.labeled with this label starts a task
      command: /harness             # issue comments starting with this: run, retry, cancel
      repos:
        octo-org/shop: {path: ../examples/shop, policy: policies/demo.yaml, base: main}
    linear:
      path: /webhooks/linear
      secret_env: LINEAR_WEBHOOK_SECRET
      teams: {ENG: {path: ../examples/shop, policy: policies/demo.yaml}}

Paths are relative to the config file. Each source is a block of its own; a new source (or
`schedules:`, which `harness night` reads from this same file) is one more optional field of
`TriggersConfig`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from harness.config.strict import StrictModel, parse_yaml_mapping
from harness.errors import InputError
from harness.night.schedule import Schedule

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
URL_PATH = r"^/"


class TargetMapping(StrictModel):
    """Where a ticket's work goes: a repository, its base and the policy its task runs under."""

    path: str = Field(min_length=1)
    """The target repository (or a directory inside one), relative to the config file."""
    policy: str = Field(min_length=1)
    """The policy file the ticket's task runs under, relative to the config file."""
    base: str | None = None
    """Branch, tag or commit to start from; default: the repository's HEAD."""
    specs_dir: str = "specs"
    """Where a spec made from a ticket is saved as `<id>.md` (relative to the config file);
    the replay agent looks for `<id>.replay.yaml` there."""
    tiers: list[Literal[1, 2, 3]] = [1, 2]
    """Tiers a ticket may run automatically; a ticket of another tier is refused, saying so."""
    tier: Literal[1, 2, 3] = 2
    """The tier of a ticket that names none (no `tier:` in its front matter or labels)."""


class GitHubSource(StrictModel):
    """GitHub webhooks (a repository webhook or a GitHub App), signed X-Hub-Signature-256."""

    path: str = Field(default="/webhooks/github", pattern=URL_PATH)
    """Where GitHub posts."""
    secret_env: str = Field(default="GITHUB_WEBHOOK_SECRET", pattern=ENV_NAME)
    """The environment variable holding the webhook's secret; unset, serve refuses to start."""
    label: str = Field(default="harness", min_length=1)
    """`issues` `labeled` with this label starts (or resumes) the issue's task."""
    command: str = Field(default="/harness", min_length=1)
    """An issue comment starting with this, then `run`, `retry` or `cancel`, from a user with
    write access to the repository."""
    repos: dict[str, TargetMapping] = {}
    """`owner/name` → where its issues' work goes."""


class LinearSource(StrictModel):
    """Linear webhooks, signed Linear-Signature (HMAC-SHA256 of the body, hex)."""

    path: str = Field(default="/webhooks/linear", pattern=URL_PATH)
    secret_env: str = Field(default="LINEAR_WEBHOOK_SECRET", pattern=ENV_NAME)
    label: str = Field(default="harness", min_length=1)
    """An issue carrying this label starts its task."""
    state: str | None = None
    """An issue moved to this workflow state (e.g. `Todo`) starts its task too."""
    teams: dict[str, TargetMapping] = {}
    """Team key (the prefix of its issue identifiers, e.g. ENG) → where its issues' work goes."""


class GenericSource(StrictModel):
    """Any other tracker: POST `{"key", "title", "body", "target", "intent"?}` signed
    X-Harness-Signature-256 (`sha256=` + HMAC-SHA256 of the body, hex, as GitHub signs)."""

    path: str = Field(default="/webhooks/generic", pattern=URL_PATH)
    secret_env: str = Field(default="HARNESS_WEBHOOK_SECRET", pattern=ENV_NAME)
    targets: dict[str, TargetMapping] = {}
    """The `target` a payload names → where its work goes."""


class TriggersConfig(StrictModel):
    """The file `harness serve --config` reads."""

    workers: int = Field(default=2, ge=1, le=64)
    """Worker lanes running admitted tasks (each a thread running one task at a time)."""
    duplicate_window_s: float = Field(default=7 * 24 * 3600, gt=0)
    """A delivery id or body hash seen within this window is a duplicate (a no-op)."""
    github: GitHubSource | None = None
    linear: LinearSource | None = None
    generic: GenericSource | None = None
    schedules: list[Schedule] = []
    """Nights to fire on cron schedules (harness.night.schedule): `harness serve` runs
    `harness night --config` on this file every 30 s, which fires each due one once."""

    @model_validator(mode="after")
    def _one_source(self) -> TriggersConfig:
        no_source = self.github is None and self.linear is None and self.generic is None
        if no_source and not self.schedules:  # a config of schedules alone serves those
            raise ValueError(
                "no source: add a `github:`, `linear:` or `generic:` block (or `schedules:`)"
            )
        paths = [s.path for s in (self.github, self.linear, self.generic) if s is not None]
        if len(set(paths)) != len(paths):
            raise ValueError(f"two sources share one path ({', '.join(paths)}); give each its own")
        return self

    def sources(self) -> list[tuple[Source, GitHubSource | LinearSource | GenericSource]]:
        found: list[tuple[Source, GitHubSource | LinearSource | GenericSource]] = []
        for name, source in (("github", self.github), ("linear", self.linear)):
            if source is not None:
                found.append((name, source))  # type: ignore[arg-type]
        if self.generic is not None:
            found.append(("generic", self.generic))
        return found


Source = Literal["github", "linear", "generic"]


class LoadedTriggers:
    """The config with where it came from: its paths resolve against its folder."""

    def __init__(self, config: TriggersConfig, path: Path) -> None:
        self.config = config
        self.path = path.resolve()
        self.root = self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def secrets(self) -> dict[Source, bytes]:
        """Each configured source's secret, from the variable it names. A source whose variable
        is unset or empty is an InputError naming `secret_env`: a receiver that cannot check
        signatures would run whatever anyone posts."""
        found: dict[Source, bytes] = {}
        for name, source in self.config.sources():
            value = os.environ.get(source.secret_env, "")
            if not value:
                raise InputError(
                    f"{self.path}: {name}.secret_env: ${source.secret_env} is not set; export "
                    "the webhook's secret in it (serve refuses unsigned webhooks)"
                )
            found[name] = value.encode()
        return found


def load_triggers(path: Path) -> LoadedTriggers:
    """Read and validate triggers.yaml; every problem is one InputError naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: triggers config not found (pass --config FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read triggers config: {exc}") from None
    config = parse_yaml_mapping(text, path, TriggersConfig, "with a `github:` or `linear:` block")
    return LoadedTriggers(config, path)
