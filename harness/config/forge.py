"""The forge settings of `publish:` (GitHub, GitLab): where the API is and how harness
authenticates, and the repository a remote's URL names.

Credentials are named, never written in a policy: an environment variable's name
(`token_env`) or a GitHub App's private key file. Their values stay in harness's host process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from harness import redact
from harness.config.strict import StrictModel
from harness.errors import InputError

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class GitHubAppConfig(StrictModel):
    """A GitHub App installation: PRs it opens trigger CI, the bot is their author (so a person
    can review them), and its verdicts are check runs."""

    app_id: int = Field(ge=1)
    private_key_file: str = Field(min_length=1)
    """The App's private key (PEM); absolute, or relative to where harness runs."""
    installation_id: int = Field(ge=1)
    """The installation on the repository's owner (Settings → GitHub Apps → Configure: the
    number at the end of the page's address)."""


class GitHubConfig(StrictModel):
    api_url: str = Field(default="https://api.github.com", pattern=r"^https?://")
    """The REST API's root: GitHub Enterprise's `https://HOST/api/v3`, or a loopback stand-in."""
    token_env: str | None = Field(default=None, pattern=ENV_NAME)
    """The environment variable holding a token (a fine-grained token with contents, pull
    requests and commit statuses: write), e.g. GITHUB_TOKEN."""
    app: GitHubAppConfig | None = None
    """A GitHub App instead of a token (better: see README, Publishing to GitHub)."""

    @model_validator(mode="after")
    def _one_credential(self) -> GitHubConfig:
        if (self.token_env is None) == (self.app is None):
            raise ValueError(
                "name exactly one credential: token_env (e.g. GITHUB_TOKEN) or "
                "app: {app_id, private_key_file, installation_id}"
            )
        return self


class GitLabConfig(StrictModel):
    url: str = Field(default="https://gitlab.com", pattern=r"^https?://")
    token_env: str = Field(default="GITLAB_TOKEN", pattern=ENV_NAME)


def token_from_env(name: str, field: str, source: Path | str) -> str:
    """The token in `$name`; InputError naming the variable when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise InputError(
            f"{source}: {field}: environment variable {name} is not set; export it with the "
            "forge token, or name another variable"
        )
    # Whatever the variable is called, its value is a secret to every writer from now on.
    redact.remember({name: value})
    return value


def private_key(app: GitHubAppConfig, source: Path | str) -> str:
    path = Path(app.private_key_file).expanduser()
    try:
        key = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"{source}: publish.github.app.private_key_file: cannot read {path} "
            f"({exc.strerror}); point it at the App's .pem file"
        ) from None
    redact.remember({"GITHUB_APP_PRIVATE_KEY": key.strip()})
    return key


@dataclass(frozen=True)
class RemoteRepository:
    """The repository a git remote's URL names on its forge."""

    host: str
    """Host (and port) of the URL, e.g. github.com or 127.0.0.1:8080."""
    owner: str
    name: str
    https_url: str | None
    """The URL as http(s), for an authorization header scoped to it; None for ssh remotes."""

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


_HTTP = re.compile(r"^(https?)://(?:[^@/]+@)?([^/]+)/(.+?)/([^/]+?)(?:\.git)?/?$")
_SSH_URL = re.compile(r"^ssh://(?:[^@/]+@)?([^/:]+)(?::\d+)?/(.+?)/([^/]+?)(?:\.git)?/?$")
_SCP = re.compile(r"^(?:[^@/]+@)?([^/:]+):(?!//)(.+?)/([^/]+?)(?:\.git)?/?$")


def parse_remote_url(url: str) -> RemoteRepository | None:
    """Owner and name from a remote URL: https://github.com/o/n(.git), git@github.com:o/n.git,
    ssh://git@github.com/o/n.git, http://127.0.0.1:PORT/o/n.git. The owner may hold slashes
    (GitLab groups). None for a URL of no such form (a local path)."""
    if found := _HTTP.match(url):
        scheme, host, owner, name = found.groups()
        return RemoteRepository(host, owner, name, f"{scheme}://{host}/")
    if found := _SSH_URL.match(url) or _SCP.match(url):
        host, owner, name = found.groups()
        return RemoteRepository(host, owner, name, None)
    return None
