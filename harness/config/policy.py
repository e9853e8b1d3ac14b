"""The policy: the rules a run follows, loaded from YAML that users own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from harness.config.forge import GitHubConfig, GitLabConfig, private_key, token_from_env
from harness.config.strict import StrictModel, parse_yaml_mapping
from harness.errors import InputError
from harness.git import refused_in_branch_names
from harness.integration.config import IntegrationConfig
from harness.sandbox.egress_proxy import egress_host
from harness.sandbox.limits import SandboxLimits, SandboxView
from harness.setup.config import SetupConfig

AgentKind = Literal["anthropic", "command", "replay"]
GateKind = Literal["lint", "type", "test", "integration", "custom"]


class RetryConfig(StrictModel):
    """Retries of transient model API errors (429, 529, 5xx, connection errors)."""

    max_retries: int = Field(default=6, ge=0)
    """Retries per request; past them the failure is infrastructure, not the agent's."""
    initial_backoff_s: float = Field(default=1.0, gt=0)
    """Backoff before the first retry, doubled each retry; the wait is uniform(0, backoff)
    (full jitter), on top of the server's retry-after, never over max_wait_s."""
    max_wait_s: float = Field(default=120, gt=0)
    """Cap on any single wait. A server asking for longer (retry-after: 3600) is not obeyed:
    the task is deferred at once (outcome `deferred`, with a `retry_at`), so one reply cannot
    stall a night run."""
    request_timeout_s: float = Field(default=600, gt=0)


class RateLimit(StrictModel):
    """Fleet-wide limits shared by every task of a run, so many tasks don't stampede one key."""

    max_concurrent_requests: int = Field(default=8, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Input plus output tokens per rolling minute across the run; None: no limit."""


def _egress_host(value: str) -> str:
    try:
        return egress_host(value)
    except ValueError as exc:
        raise PydanticCustomError("egress_host", "{why}", {"why": str(exc)}) from None


class AgentConfig(StrictModel):
    kind: AgentKind = "replay"
    """Which Agent backend runs each attempt. `replay` plays a scripted trajectory, no model."""
    model: str | None = None
    """Model id for the `anthropic` backend; it must have an entry in `prices`."""
    max_tokens: int = Field(default=8192, ge=1, le=64_000)
    """Output tokens per model response."""
    retry: RetryConfig = RetryConfig()
    rate_limit: RateLimit = RateLimit()
    circuit_breaker_s: float = Field(default=600, gt=0)
    """When every model call across the run has failed for this long (an outage, a locked
    key), no new task starts and running ones are deferred, instead of each task burning its
    retries. The default outlasts a full round of retries (agent.retry)."""
    command: list[str] | None = None
    """For `command`: the argv of a CLI agent; {prompt_file} and {workdir} are filled in."""
    timeout_s: float = Field(default=1800, gt=0)
    """For `command`: one attempt's time limit."""
    network: bool = False
    """Replaced by `egress`: `true` is refused, with a message saying to list hosts there."""
    egress: list[Annotated[str, AfterValidator(_egress_host)]] = []
    """For `command`: the hosts its sandbox may reach, through harness's allowlisting proxy
    (tinyproxy), e.g. [api.anthropic.com]; empty (the default): no network at all."""
    env: list[str] = []
    """For `command`: host environment variables passed into its sandbox, e.g. its API key."""

    @field_validator("network")
    @classmethod
    def _network_is_egress_now(cls, value: bool) -> bool:
        if value:
            raise PydanticCustomError(
                "network",
                "the open network is gone: list the hosts the agent may reach under "
                "agent.egress instead, e.g. egress: [api.anthropic.com]",
            )
        return value


class Price(StrictModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)

    def cost(
        self, input_tokens: int, output_tokens: int, cache_write: int, cache_read: int
    ) -> float:
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_write * self.cache_write
            + cache_read * self.cache_read
        ) / 1_000_000


class GateConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Short name shown in tables and records; unique within the policy."""
    kind: GateKind
    """What the gate checks; used for reporting and, later, for problem parsing."""
    command: str = Field(min_length=1)
    """Shell command run in the sandbox with the spec's repo directory as the working directory."""
    timeout_s: float = Field(default=600, gt=0)
    """The command is killed after this many seconds; a timeout is an infrastructure failure."""
    cache_dirs: list[str] | None = None
    """Directories, relative to the spec's repo directory, where the gate's tool keeps its
    cache: built once on the base commit per run, and each task's gate phase starts from a
    private copy (harness.gates.caches). None: the defaults of the tools the command names
    (mypy's and ruff's, which every sandbox keeps in its scratch dir); []: no warm cache."""

    @field_validator("cache_dirs")
    @classmethod
    def _relative_cache_dirs(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            parts = Path(entry).parts
            if not entry.strip() or Path(entry).is_absolute() or ".." in parts or not parts:
                raise PydanticCustomError(
                    "cache_dir",
                    "'{entry}' is not a directory below the spec's repo directory; write a "
                    "relative path without '..', e.g. .mypy_cache",
                    {"entry": entry},
                )
        return value


class Budget(StrictModel):
    max_attempts: int = Field(default=2, ge=1)
    """Agent attempts per task; 2 means one retry after feedback."""
    max_steps: int = Field(default=60, ge=1)
    """Tool calls per attempt; at the cap the attempt stops and the task escalates."""
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Spend cap per task for model-backed agents; None means no cap."""
    max_input_tokens: int | None = Field(default=None, ge=1)
    """Input tokens per task (cache reads and writes included); None means no cap."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    wall_clock_s: float = Field(default=1800, gt=0)
    """Wall-clock cap per task, from provisioning on."""


class BudgetOverride(StrictModel):
    """The subset of a budget a spec may override; unset fields keep the policy's value."""

    max_attempts: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_input_tokens: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    wall_clock_s: float | None = Field(default=None, gt=0)

    def apply_to(self, budget: Budget) -> Budget:
        return budget.model_copy(update=self.model_dump(exclude_none=True))


class PublishConfig(StrictModel):
    auto_pr_tiers: list[Literal[1, 2, 3]] = [1, 2]
    """Tiers whose verified tasks become PRs; other tiers escalate for review once verified."""
    branch_prefix: str = Field(default="harness", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    """Task branches are named <branch_prefix>/<run-id>/<spec-id>."""
    protected_paths: list[str] = []
    """Git globs from the repository's top level; a change touching one never auto-PRs."""
    forge: Literal["local", "github", "gitlab"] = "local"
    """Where tasks are published: `local` records under runs/ only, or also a forge's PRs."""
    remote: str = Field(default="origin", min_length=1)
    """The git remote of the spec's repository that task branches are pushed to; its URL
    names the forge's repository (owner/name)."""
    draft_tiers: list[Literal[1, 2, 3]] = [2]
    """Verified tasks of these tiers open as draft PRs."""
    labels: list[str] = ["harness"]
    """Labels on every PR harness opens."""
    reviewers: list[str] = []
    """Reviewers requested on every PR (logins); a spec's own `reviewers:` are added."""
    escalations: Literal["draft", "branch", "none"] = "draft"
    """What an escalated task publishes on the forge: a draft PR labelled for a human, the
    branch only, or nothing (its local record only)."""
    escalation_label: str = Field(default="needs-human", min_length=1)
    """The label that marks an escalation's draft PR for a human."""
    github: GitHubConfig | None = None
    gitlab: GitLabConfig | None = None

    @model_validator(mode="after")
    def _forge_settings(self) -> PublishConfig:
        if self.forge == "github" and self.github is None:
            raise ValueError(
                "forge github needs publish.github: {token_env: GITHUB_TOKEN} or "
                "{app: {app_id, private_key_file, installation_id}}"
            )
        return self

    def check_forge(self, source: Path | str) -> None:
        """What publishing needs from the environment, checked at a run's start: the token
        variable the policy names is set (InputError naming it otherwise)."""
        if self.forge == "github" and self.github is not None:
            if self.github.token_env is not None:
                token_from_env(self.github.token_env, "publish.github.token_env", source)
            elif self.github.app is not None:
                private_key(self.github.app, source)
        if self.forge == "gitlab":
            gitlab = self.gitlab or GitLabConfig()
            token_from_env(gitlab.token_env, "publish.gitlab.token_env", source)

    @field_validator("branch_prefix")
    @classmethod
    def _a_branch_git_accepts(cls, prefix: str) -> str:
        # Checked at load, with git's own rules: a prefix git refuses would fail every task
        # only when its branch is made.
        if refused_in_branch_names(f"{prefix}/run-id/spec-id"):
            raise PydanticCustomError(
                "ref_format",
                "git refuses it in a branch name ('..', '//', a part starting with '.' or "
                "ending in '.lock' or '/'); use parts of letters, digits, '-', '_' and single "
                "dots joined by single '/', e.g. harness or team/harness",
            )
        return prefix


class FeedbackConfig(StrictModel):
    """What the agent is told after failing gates."""

    max_tokens: int = Field(default=4000, ge=200)
    """Budget for one attempt's feedback; every failing test id and file:line is kept anyway."""
    check_base: bool = True
    """Run a failing gate once on the untouched base (per run) to label pre-existing failures."""


class FlakyConfig(StrictModel):
    reruns: int = Field(default=1, ge=0)
    """A failing test gate is re-run this many times on the same tree; a test that then passes
    is flaky."""
    block: bool = False
    """Whether a flaky test blocks verification; when not, it is recorded and the gate passes."""
    rerun: Literal["failed", "all"] = "failed"
    """What a re-run of a pytest gate runs: `failed`, only the tests that failed (their node
    ids, through pytest's --last-failed); `all`, the whole gate. Other test gates always
    re-run whole. Either way a test is flaky only when the re-run's report shows it passed."""


class VerifyConfig(StrictModel):
    """Verification: every gate on exactly the committed tree before a task is published."""

    rerun: bool = False
    """Run every gate again even when the last attempt's gates all passed on a clean checkout
    of the same tree (by default that evidence is reused, and the PR record says so)."""


class InfrastructureConfig(StrictModel):
    retries: int = Field(default=1, ge=0)
    """Re-runs of a gate that timed out or was killed (e.g. out of memory) before the task
    escalates; never charged to the agent's attempts."""


GuardFindingKind = Literal[
    "test_file_removed",
    "test_function_removed",
    "skip_added",
    "assertion_removed",
    "suppression_added",
    "coverage_lowered",
    "gate_config_changed",
    # harness/gates/base_compare.py: the head checks less than the base did.
    "test_missing",
    "test_newly_skipped",
    "file_unchecked",
    # harness/gates/tree_review.py: refused whatever `action` says, unless allowed by name.
    "gitlink_added",
    "nested_repository",
    "symlink_outside",
]


class GuardConfig(StrictModel):
    """The fake-green guard: changes that make gates pass without fixing anything."""

    action: Literal["block", "flag"] = "block"
    """block: the task escalates listing the findings; flag: they are listed in the PR record."""
    allow: list[GuardFindingKind] = []
    """Kinds never reported (e.g. gate_config_changed for specs that tune the linter)."""


class RunBudget(StrictModel):
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Spend cap for the whole run; when reached, running agents stop and their tasks escalate."""


def _seconds(value: object) -> object:
    """`90`, `"45s"`, `"30m"`, `"6h"`, `"7d"` → seconds; anything else is left to fail."""
    if isinstance(value, str):
        number, unit = value[:-1].strip(), value[-1:]
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(unit)
        if scale is not None:
            try:
                return float(number) * scale
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not a duration; write e.g. 90, 45s, 30m, 6h or 7d")
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class StoreConfig(StrictModel):
    """Where run state lives. `--store`, then HARNESS_STORE_URL, override `url`."""

    url: str | None = None
    """sqlite:///path.db (default: <runs-dir>/harness.db) or postgresql://user@host/db (shared
    by many workers)."""
    lease_s: float = Field(default=60, ge=1)
    """A worker's claim on a task lasts this long unless heartbeated (every third of it); a
    lapsed lease lets another worker take the task over."""


class TTLConfig(StrictModel):
    """How long each kind of environment may live; expires_at is set from these at allocation.
    Past it, `harness gc` tears it down (or removes what it retained)."""

    sandbox: Duration = 6 * 3600
    """A task's sandbox (worktree, processes) while it runs."""
    escalated: Duration = 7 * 86400
    """The branch holding an escalated (or failed) task's work in progress, after teardown."""
    verified: Duration = 30 * 86400
    """The branch of a verified task (its PR's head), after teardown."""


class Policy(StrictModel):
    agent: AgentConfig = AgentConfig()
    gates: list[GateConfig] = Field(min_length=1)
    """Run in this order, cheapest first; the first failing gate stops the rest."""
    budget: Budget = Budget()
    run_budget: RunBudget = RunBudget()
    prices: dict[str, Price] = {}
    """Per model id; every model-backed agent's calls are costed from here."""
    feedback: FeedbackConfig = FeedbackConfig()
    flaky: FlakyConfig = FlakyConfig()
    verify: VerifyConfig = VerifyConfig()
    infrastructure: InfrastructureConfig = InfrastructureConfig()
    guard: GuardConfig = GuardConfig()
    concurrency: int = Field(default=4, ge=1)
    """Tasks run at once; `harness run --concurrency` overrides it."""
    interrupt_grace_s: float = Field(default=30, ge=0)
    """After a first SIGINT or SIGTERM, how long the agents and gates already running may take
    to finish (their steps are kept); then they are stopped, to run again on `harness resume`."""
    publish: PublishConfig = PublishConfig()
    store: StoreConfig = StoreConfig()
    ttl: TTLConfig = TTLConfig()
    integration: IntegrationConfig = IntegrationConfig()
    """Integration gates' services, routing and backend (local or kubernetes)."""
    limits: SandboxLimits = SandboxLimits()
    """Each sandboxed command's memory, processes, CPU time and /tmp size; the size caps a
    commit's files and worktree must stay under."""
    sandbox: SandboxView = SandboxView()
    """What sandboxes see beyond their allowlisted view: `read_paths`, recorded in the run."""
    setup: SetupConfig | None = None
    """Commands that install the repository's dependencies once per base, before any gate
    (harness.setup); None: no set-up."""

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: list[GateConfig]) -> list[GateConfig]:
        names = [gate.name for gate in gates]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"gate names must be unique, repeated: {', '.join(duplicates)}")
        return gates

    def check_agent(self, kind: AgentKind, source: Path) -> None:
        """What running `kind` needs from this policy; checked for the effective agent (after
        --agent), before anything is created."""
        model = self.agent.model
        if kind == "anthropic" and not model:
            raise InputError(f"{source}: agent.model: required for the anthropic agent")
        if kind == "anthropic" and model not in self.prices:
            raise InputError(
                f"{source}: prices: no price for model {model!r}; add prices.{model}: "
                "{input, output, cache_write, cache_read} (USD per million tokens)"
            )
        if kind == "command" and not self.agent.command:
            raise InputError(
                f"{source}: agent.command: required for the command agent "
                "(an argv list using {prompt_file} and {workdir})"
            )


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; every problem is an InputError naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: policy file not found (pass --policy FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read policy: {exc}") from None
    return parse_policy(text, path)


def parse_policy(text: str, path: Path) -> Policy:
    """Validate a policy's YAML text; `path` is only named in errors."""
    return parse_yaml_mapping(text, path, Policy, "with at least `gates:` (a policy)")


def policy_changes(old_text: str, new_text: str) -> list[str]:
    """What differs between two versions of a policy file, one `field: old → new` each (at
    most five), or `comments or formatting only` when the YAML means the same."""
    try:
        old, new = yaml.safe_load(old_text), yaml.safe_load(new_text)
    except yaml.YAMLError:
        return ["the file is no longer valid YAML"]
    changes: list[str] = []

    def walk(before: object, after: object, where: str) -> None:
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after), key=str):
                walk(before.get(key), after.get(key), f"{where}.{key}" if where else str(key))
        elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
            for n, (b, a) in enumerate(zip(before, after, strict=True)):
                walk(b, a, f"{where}[{n}]")
        elif before != after:
            changes.append(f"{where or 'policy'}: {_short(before)} → {_short(after)}")

    walk(old, new, "")
    if not changes:
        return ["comments or formatting only"]
    return changes[:5] + ([f"and {len(changes) - 5} more"] if len(changes) > 5 else [])


def _short(value: object) -> str:
    text = "(absent)" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
