"""Specs: front matter is validated strictly, repo and base are resolved at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, TinyProject, git, git_ok, init_repo

from harness.config.spec import collect_spec_files, load_spec, load_specs
from harness.errors import InputError


def write_spec(path: Path, front: dict[str, object] | str | None, body: str = "Do it.\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if front is None:
        path.write_text(body, encoding="utf-8")
    else:
        text = front if isinstance(front, str) else yaml.safe_dump(front, sort_keys=False)
        path.write_text(f"---\n{text}---\n{body}", encoding="utf-8")
    return path


def good_front(**changes: object) -> dict[str, object]:
    front: dict[str, object] = {"id": "good", "title": "A good spec", "tier": 2, "repo": "../repo"}
    front.update(changes)
    return {k: v for k, v in front.items() if v is not None}


def load_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path.resolve()) in message, f"the error does not name the file: {message}"
    return message


def test_good_spec_resolves_repo_and_base(tiny: TinyProject) -> None:
    path = write_spec(
        tiny.specs / "good.md",
        good_front(acceptance=["pytest -q"], paths=["src/*.py"], budget={"max_attempts": 3}),
        body="\n\nFix the thing.\n\n",
    )
    spec = load_spec(path)
    head = git(tiny.repo, "rev-parse", "HEAD").strip()
    assert spec.id == "good"
    assert spec.tier == 2
    assert spec.source == str(path.resolve())
    assert spec.repo_dir == str(tiny.repo.resolve())
    assert spec.git_toplevel == str(tiny.repo.resolve())
    assert spec.subdir == Path(".")
    assert spec.base_commit == head
    assert spec.body == "Fix the thing.\n"
    assert spec.acceptance == ["pytest -q"]
    assert spec.paths == ["src/*.py"]
    assert spec.budget is not None and spec.budget.max_attempts == 3


def test_relative_repo_is_resolved_against_the_spec_file_not_the_cwd(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_spec(tiny.specs / "good.md", good_front())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_spec(path).repo_dir == str(tiny.repo.resolve())


def test_absolute_repo_path(tiny: TinyProject) -> None:
    spec = load_spec(write_spec(tiny.specs / "abs.md", good_front(repo=str(tiny.repo))))
    assert spec.repo_dir == str(tiny.repo.resolve())


def test_repo_in_a_subdirectory_of_a_git_repo(tiny: TinyProject) -> None:
    spec = load_spec(write_spec(tiny.specs / "sub.md", good_front(repo="../repo/proj")))
    assert spec.repo_dir == str((tiny.repo / "proj").resolve())
    assert spec.git_toplevel == str(tiny.repo.resolve())
    assert spec.subdir == Path("proj")


def test_explicit_base_ref_is_resolved_to_its_commit(tiny: TinyProject) -> None:
    first = git(tiny.repo, "rev-parse", "HEAD").strip()
    git(tiny.repo, "tag", "v1")
    (tiny.repo / "later.txt").write_text("later\n", encoding="utf-8")
    git(tiny.repo, "add", "-A")
    git(tiny.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "later")
    assert load_spec(write_spec(tiny.specs / "t.md", good_front(base="v1"))).base_commit == first
    head = git(tiny.repo, "rev-parse", "HEAD").strip()
    assert head != first
    assert load_spec(write_spec(tiny.specs / "h.md", good_front())).base_commit == head


def test_the_demo_specs_load() -> None:
    spec_set = load_specs([REPO_ROOT / "specs"])
    assert spec_set.errors == []
    ids = sorted(spec.id for spec in spec_set.specs)
    assert ids == [
        "add-bulk-discount",
        "fix-pagination",
        "migrate-payment-provider",
        "price-bulk-orders",
        "round-tax-per-line",
    ]
    for spec in spec_set.specs:
        expected = "examples/mesh" if spec.id == "price-bulk-orders" else "examples/shop"
        assert spec.subdir == Path(expected)


def test_missing_id(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(id=None)))
    assert "id: required field is missing" in message


def test_bad_id(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(id="Has Spaces")))
    assert "id:" in message


def test_bad_tier(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(tier=4)))
    assert "tier:" in message


def test_tier_as_a_string_is_not_coerced(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(tier="2")))
    assert "tier:" in message


def test_unknown_key(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(acceptence=["pytest"])))
    assert "acceptence" in message
    assert "unknown key" in message


def test_unknown_key_in_budget_override(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(budget={"max_atempts": 3})))
    assert "budget.max_atempts" in message


def test_empty_body(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(), body="\n   \n"))
    assert "body is empty" in message


def test_no_front_matter(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", None, body="# Just a title\n"))
    assert "front matter" in message


def test_front_matter_that_is_not_valid_yaml(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", "id: [unclosed\n"))
    assert "YAML" in message


def test_repo_not_a_directory(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(repo="../no-such-dir")))
    assert "repo:" in message
    assert "no-such-dir" in message
    assert "not a directory" in message


def test_repo_not_in_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not git_ok(plain, "rev-parse", "--git-dir"), "precondition: tmp is not in a repo"
    message = load_error(write_spec(tmp_path / "specs" / "x.md", good_front(repo="../plain")))
    assert "repo:" in message
    assert "not inside a git repository" in message


def test_base_ref_missing(tiny: TinyProject) -> None:
    message = load_error(write_spec(tiny.specs / "x.md", good_front(base="no-such-branch")))
    assert "base:" in message
    assert "no-such-branch" in message


def test_missing_spec_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "missing.md")
    assert "not found" in message


def test_directory_skips_drafts_readmes_and_other_files(tiny: TinyProject) -> None:
    write_spec(tiny.specs / "a.md", good_front(id="a"))
    write_spec(tiny.specs / "b.md", good_front(id="b"))
    write_spec(tiny.specs / "draft-ideas.md", None, body="ideas\n")
    write_spec(tiny.specs / "README.md", None, body="# specs\n")
    (tiny.specs / "a.replay.yaml").write_text("attempts: []\n", encoding="utf-8")
    files = collect_spec_files([tiny.specs])
    assert [f.name for f in files] == ["a.md", "b.md"]
    spec_set = load_specs([tiny.specs])
    assert spec_set.errors == []
    assert [s.id for s in spec_set.specs] == ["a", "b"]


def test_missing_target_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no-such-path"):
        collect_spec_files([tmp_path / "no-such-path"])


def test_directory_without_specs_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "draft-x.md").write_text("x\n", encoding="utf-8")
    with pytest.raises(InputError, match="no specs found"):
        collect_spec_files([tmp_path])


def test_duplicate_ids_keep_the_first_and_report_the_second(tiny: TinyProject) -> None:
    first = write_spec(tiny.specs / "a.md", good_front(id="same"))
    second = write_spec(tiny.specs / "b.md", good_front(id="same"))
    spec_set = load_specs([tiny.specs])
    assert [s.source for s in spec_set.specs] == [str(first.resolve())]
    assert len(spec_set.errors) == 1
    error = spec_set.errors[0]
    assert str(second.resolve()) in error
    assert str(first.resolve()) in error
    assert "same" in error


def test_load_specs_keeps_going_past_a_malformed_spec(tiny: TinyProject) -> None:
    write_spec(tiny.specs / "a-bad.md", good_front(id="bad", tier=7))
    write_spec(tiny.specs / "b-good.md", good_front(id="good"))
    write_spec(tiny.specs / "c-bad.md", good_front(id="other", repo="../nowhere"))
    write_spec(tiny.specs / "d-good.md", good_front(id="good2"))
    spec_set = load_specs([tiny.specs])
    assert [s.id for s in spec_set.specs] == ["good", "good2"]
    assert len(spec_set.errors) == 2
    assert "a-bad.md" in spec_set.errors[0] and "tier" in spec_set.errors[0]
    assert "c-bad.md" in spec_set.errors[1] and "repo" in spec_set.errors[1]


def test_bare_repository_is_refused(tmp_path: Path) -> None:
    source = init_repo_with_file(tmp_path / "src")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    message = load_error(write_spec(tmp_path / "specs" / "x.md", good_front(repo="../bare.git")))
    assert "repo:" in message


def init_repo_with_file(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "f.txt").write_text("f\n", encoding="utf-8")
    return init_repo(path)
