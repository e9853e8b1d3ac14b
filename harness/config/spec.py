"""Specs: the work, as Markdown with YAML front matter. The body is the agent's instructions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import frontmatter
import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from harness.config.policy import BudgetOverride
from harness.config.strict import StrictModel, describe_validation_error
from harness.errors import InputError
from harness.git import GitRepository, refused_in_branch_names

SPEC_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
VARIANT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}/v[1-9][0-9]{0,3}")
"""A fleet variant's task id, `<spec>/v<k>` (harness.fleet.variants makes these; never a
spec file's own `id:`)."""


class FleetVariant(StrictModel):
    """One variant of a fleet: what differs from the policy for it (unset: the policy's)."""

    agent: Literal["anthropic", "command", "replay"] | None = None
    """The agent kind for this variant."""
    model: str | None = None
    """The model id for this variant (priced in the policy's `prices:`)."""
    prompt: str | None = None
    """A file (relative to the spec) whose text is added to the spec's body for this variant."""


class FleetJudge(StrictModel):
    """`fleet: {judge: {model: …}}`: a model that compares two tied variants' compressed
    evidence. It must be a model no variant uses (one of them would judge its own work), with
    a price in the policy's `prices:` (its calls count in the run's spend)."""

    model: str = Field(min_length=1)


class FleetBlock(StrictModel):
    """`fleet:` in a spec: the variants `harness fleet` runs, cycled up to `-n`."""

    variants: list[FleetVariant] = Field(min_length=1)
    """The variants, in order (v1 is the first)."""
    judge: FleetJudge | None = None
    """The optional tie-break judge (off when unset): consulted only when verified variants
    tie on every deterministic criterion; its vote is advisory and recorded."""


class Variant(FleetVariant):
    """A fleet task's variant, as summary.json shows it."""

    k: int
    """1-based: the task's id is `<spec>/v<k>`."""


class SpecFrontMatter(StrictModel):
    """The keys a spec's front matter may hold."""

    id: str
    """Unique within a batch; names the task branch and the records: lowercase letters,
    digits, '.', '_' and '-', starting with a letter or digit, at most 80 characters."""
    title: str = Field(min_length=1)
    tier: Literal[1, 2, 3]
    """1 agent-led, 2 agent-assisted, 3 human-led (escalated before any agent runs)."""
    repo: str = Field(min_length=1)
    """The target repository (or a directory inside one), relative to the spec file or absolute."""
    base: str | None = None
    """Branch, tag or commit to start from; default: the repository's HEAD."""
    acceptance: list[str] = []
    """Extra gate commands, run after the policy's gates."""
    integration: list[str] = []
    """Integration test commands for the policy's integration gate (default: the service map's
    `tests`); run against the task's sandboxed services and the shared baseline."""
    paths: list[str] = []
    """Where the change is expected (git glob pathspecs relative to `repo`)."""
    tests_may_change: list[str] = []
    """Tests this change may remove, skip or rename: globs matched against a test's id
    (`tests/test_x.py::test_y`) or its file (`tests/test_old_*.py`). Any other test that
    passed on the base must still run and pass (harness.gates.base_compare)."""
    reviewers: list[str] = []
    """Forge logins asked to review this spec's PR, besides the policy's `publish.reviewers`."""
    closes: list[str] = []
    """Tickets this change closes, e.g. `octo-org/shop#7` (set by `harness serve` for a
    ticket's spec): its PR says `Closes octo-org/shop#7`, which the forge links and closes."""
    budget: BudgetOverride | None = None
    """Overrides of the policy's budget for this spec only."""
    priority: int = 0
    """`harness night` runs higher priorities first (then lower tiers, then file order)."""
    fleet: FleetBlock | None = None
    """The variants `harness fleet` runs for this spec (else: `--vary`, or the policy's agent)."""
    holdout: list[str] = []
    """Held-out check commands: no agent sees them (prompt or feedback); `harness fleet` runs
    them on every verified variant at the end, to rank the variants."""
    after: list[str] = []
    """Spec ids this one waits for: it runs only once they are verified (`harness night`);
    otherwise it is skipped, with the reason."""

    @field_validator("id")
    @classmethod
    def _an_id(cls, spec_id: str) -> str:
        if not SPEC_ID.fullmatch(spec_id) and not VARIANT_ID.fullmatch(spec_id):
            raise PydanticCustomError(
                "spec_id",
                "not a valid id: use 1 to 80 lowercase letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, e.g. 'fix-pagination' or 'issue-42'",
            )
        return spec_id

    @field_validator("after")
    @classmethod
    def _spec_ids(cls, ids: list[str]) -> list[str]:
        for spec_id in ids:
            if not SPEC_ID.fullmatch(spec_id):
                raise ValueError(f"{spec_id!r} is not a spec id; list ids, e.g. ['fix-pagination']")
        return ids

    @field_validator("tests_may_change")
    @classmethod
    def _test_globs(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if not glob.strip() or glob.startswith("/"):
                raise ValueError(
                    f"{glob!r} is not a test id or file glob relative to `repo`; write e.g. "
                    "'tests/test_old.py' or 'tests/test_api.py::test_v1_*'"
                )
        return globs


class Spec(SpecFrontMatter):
    """A loaded spec: the front matter plus what harness resolved from it."""

    body: str
    source: str
    """The spec file, absolute."""
    repo_dir: str
    """`repo` resolved to an absolute directory."""
    git_toplevel: str
    """The work tree root of the repository holding `repo_dir`."""
    base_commit: str
    """`base` (or HEAD) resolved once at load time, so every task of a run starts alike."""
    variant: Variant | None = None
    """Set for a fleet's task (`<spec>/v<k>`): the variant it runs."""

    @property
    def fleet_spec_id(self) -> str:
        """The spec a fleet task is a variant of (its own id outside a fleet)."""
        return self.id.split("/", 1)[0]

    @property
    def subdir(self) -> Path:
        """Where `repo` sits inside its repository ('.' when it is the top level)."""
        return Path(self.repo_dir).relative_to(self.git_toplevel)


@dataclass(frozen=True)
class SpecSet:
    """What a batch of spec paths yielded: loadable specs, and one line per spec that was not."""

    specs: list[Spec]
    errors: list[str]


def _branch_safe(spec_id: str) -> str:
    """A suggestion for an id git refuses: runs of dots become one '-', and no '.lock' or '.'
    at the end."""
    safe = re.sub(r"\.{2,}", "-", spec_id)
    safe = safe.removesuffix(".lock").rstrip(".")
    return safe or "task"


def is_spec_file(path: Path) -> bool:
    """Markdown files are specs, except drafts (draft-*.md) and folder READMEs."""
    return path.suffix == ".md" and not path.name.startswith("draft-") and path.name != "README.md"


def load_spec(path: Path) -> Spec:
    """Load one spec and resolve its repository and base; InputError names file, field, fix."""
    path = path.resolve()
    try:
        post = frontmatter.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read spec: {exc}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"{path}: front matter is not valid YAML: {detail}") from None
    if not post.metadata:
        raise InputError(f"{path}: no YAML front matter (start the file with --- id: … ---)")
    try:
        front = SpecFrontMatter.model_validate(post.metadata)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, exc)) from None
    if "/" in front.id:
        raise InputError(
            f"{path}: id: {front.id!r} may not contain '/'; `harness fleet` names variants"
        )
    if refused_in_branch_names(f"harness/run-id/{front.id}"):
        raise InputError(
            f"{path}: id: {front.id!r} cannot name a git branch (git refuses '..', and a "
            "trailing '.' or '.lock'); rename it, e.g. "
            f"{_branch_safe(front.id)!r}"
        )
    if not post.content.strip():
        raise InputError(f"{path}: body is empty; write the agent's instructions under the ---")

    repo_dir = (path.parent / front.repo).resolve()
    repository = GitRepository.containing(repo_dir, source=path)
    base_commit = repository.resolve_commit(front.base or "HEAD", source=path)
    subdir = repo_dir.relative_to(repository.toplevel)
    if not repository.has_path(base_commit, subdir):
        raise InputError(
            f"{path}: repo: {subdir} is not in the repository at base {base_commit[:12]} "
            "(tasks start from committed work: commit it, or point `base:` at a commit that has it)"
        )
    return Spec(
        **front.model_dump(),
        body=post.content.strip() + "\n",
        source=str(path),
        repo_dir=str(repo_dir),
        git_toplevel=str(repository.toplevel),
        base_commit=base_commit,
    )


def collect_spec_files(targets: list[Path]) -> list[Path]:
    """Expand files and directories into spec files; a missing target is an InputError."""
    files: list[Path] = []
    for target in targets:
        if target.is_dir():
            files.extend(sorted(p for p in target.iterdir() if p.is_file() and is_spec_file(p)))
        elif target.is_file():
            files.append(target)
        else:
            raise InputError(f"{target}: no such spec file or directory")
    if not files:
        raise InputError(f"no specs found in {', '.join(map(str, targets))} (specs are *.md)")
    return files


def load_specs(targets: list[Path]) -> SpecSet:
    """Load every spec; a malformed one is reported and skipped so the rest of the batch runs."""
    specs: list[Spec] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in collect_spec_files(targets):
        try:
            spec = load_spec(path)
        except InputError as exc:
            errors.append(str(exc))
            continue
        if spec.id in seen:
            errors.append(f"{spec.source}: id: {spec.id!r} is already used by {seen[spec.id]}")
            continue
        seen[spec.id] = spec.source
        specs.append(spec)
    return SpecSet(specs=specs, errors=errors)
