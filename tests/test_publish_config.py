"""publish: the forge settings (forge, remote, tiers, labels, escalations, github, gitlab):
each mistake is one line naming the field and the fix; the repository comes from the remote's
URL in every form git accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.forge import parse_remote_url
from harness.config.policy import load_policy
from harness.errors import InputError

GATES = "gates:\n  - {name: lint, kind: lint, command: 'ruff check .'}\n"


def policy_file(tmp_path: Path, publish: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GATES + "publish: " + publish + "\n", encoding="utf-8")
    return path


def one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_policy(path).publish.check_forge(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    return message


def test_the_contract_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "x" * 36)
    path = policy_file(
        tmp_path,
        "{forge: github, remote: origin, draft_tiers: [2], labels: [harness], "
        "escalations: draft, github: {api_url: 'https://api.github.com', "
        "token_env: GITHUB_TOKEN}, gitlab: {url: 'https://gitlab.com', "
        "token_env: GITLAB_TOKEN}}",
    )
    publish = load_policy(path).publish
    publish.check_forge(path)
    assert publish.forge == "github" and publish.github is not None
    assert publish.github.token_env == "GITHUB_TOKEN" and publish.escalations == "draft"


def test_the_default_stays_local(tmp_path: Path) -> None:
    publish = load_policy(policy_file(tmp_path, "{}")).publish
    assert (publish.forge, publish.remote, publish.escalations) == ("local", "origin", "draft")


@pytest.mark.parametrize(
    ("publish", "named"),
    [
        ("{forge: github}", "publish.github"),
        ("{forge: github, github: {api_url: 'https://x'}}", "token_env"),
        (
            "{forge: github, github: {token_env: T, app: {app_id: 1, private_key_file: k, "
            "installation_id: 2}}}",
            "exactly one credential",
        ),
        ("{forge: gitea}", "publish.forge"),
        ("{escalations: issue}", "publish.escalations"),
        ("{forge: github, github: {token_env: 'not a name'}}", "publish.github.token_env"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, publish: str, named: str) -> None:
    assert named in one_line_error(policy_file(tmp_path, publish))


def test_an_unset_token_variable_is_named_at_run_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_TEST_FORGE_TOKEN", raising=False)
    path = policy_file(tmp_path, "{forge: github, github: {token_env: HARNESS_TEST_FORGE_TOKEN}}")
    load_policy(path)  # loads: the variable is read when a run starts
    assert "HARNESS_TEST_FORGE_TOKEN is not set" in one_line_error(path)


def test_gitlab_names_its_token_variable_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    path = policy_file(tmp_path, "{forge: gitlab}")  # the default: gitlab.com, GITLAB_TOKEN
    assert "publish.gitlab.token_env: environment variable GITLAB_TOKEN" in one_line_error(path)


def test_an_app_key_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    path = policy_file(
        tmp_path,
        "{forge: github, github: {app: {app_id: 1, private_key_file: /nonexistent/app.pem, "
        "installation_id: 2}}}",
    )
    assert "/nonexistent/app.pem" in one_line_error(path)


@pytest.mark.parametrize(
    ("url", "host", "full_name"),
    [
        ("https://github.com/acme/shop.git", "github.com", "acme/shop"),
        ("https://github.com/acme/shop", "github.com", "acme/shop"),
        ("git@github.com:acme/shop.git", "github.com", "acme/shop"),
        ("ssh://git@github.com/acme/shop.git", "github.com", "acme/shop"),
        ("http://127.0.0.1:8123/acme/shop.git", "127.0.0.1:8123", "acme/shop"),
        ("https://gitlab.com/group/sub/shop.git", "gitlab.com", "group/sub/shop"),
    ],
)
def test_owner_and_name_come_from_the_remote_url(url: str, host: str, full_name: str) -> None:
    found = parse_remote_url(url)
    assert found is not None and (found.host, found.full_name) == (host, full_name)


def test_a_local_path_remote_names_no_repository() -> None:
    assert parse_remote_url("/srv/git/shop.git") is None
