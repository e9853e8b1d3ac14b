"""Publishing on a forge: the local record (runs/ keeps the evidence), then the task's desired
state converged on the forge by the reconciler (harness.publish.reconcile).

`ForgePublisher` is the `Publisher` a run uses when `publish.forge` is github (gitlab to
come); `desired_pr` and `desired_escalation` make a task's desired state, the same way in a
run and in `harness publish` (from the run's records), so re-publishing what a run published
changes nothing.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

from harness import redact
from harness.config.forge import GitLabConfig
from harness.config.policy import PublishConfig
from harness.config.spec import Spec
from harness.errors import InputError
from harness.git import Remote
from harness.publish import Escalation, PublishRefused, PullRequest
from harness.publish.local import LocalPublisher
from harness.publish.reconcile import Desired, Forge, converge
from harness.publish.render import render_escalation, render_pr

BODY_LIMIT = 65_536
"""GitHub's limit on a PR body, in characters (GitLab's is larger)."""
DIFF_LIMIT = 20_000
"""A diff up to this size is included, collapsed; a longer one is named only."""
AGENT_SUMMARY_LIMIT = 2_000
"""Characters of the agent's own summary shown (its words are not evidence)."""
COLLAPSE_LINES = 12
"""A record's section longer than this is collapsed (<details>)."""

ForgeFactory = Callable[[Spec], Forge]
"""The forge holding a spec's repository (its `publish.remote`)."""


def require_client(forge: str) -> None:
    """InputError when a forge is asked for without its extra (githubkit, python-gitlab)."""
    module = {"github": "githubkit", "gitlab": "gitlab"}.get(forge)
    if module and importlib.util.find_spec(module) is None:
        raise InputError(f"publish.forge {forge} needs {module}: pip install 'harness[{forge}]'")


def forge_factory(config: PublishConfig, source: Path | str) -> ForgeFactory:
    """One forge client per repository, made on first use."""
    made: dict[str, Forge] = {}
    lock = threading.Lock()

    def forge_for(spec: Spec) -> Forge:
        with lock:
            if spec.git_toplevel not in made:
                toplevel = Path(spec.git_toplevel)
                if config.forge == "gitlab":
                    from harness.publish.gitlab import GitLabForge

                    gitlab = config.gitlab or GitLabConfig()
                    made[spec.git_toplevel] = GitLabForge(
                        gitlab, toplevel, config.remote, source=source
                    )
                elif config.forge == "github" and config.github is not None:
                    from harness.publish.github import GitHubForge

                    made[spec.git_toplevel] = GitHubForge(
                        config.github, toplevel, config.remote, source=source
                    )
                else:
                    raise PublishRefused(f"publish.forge {config.forge}: nothing to publish on")
            return made[spec.git_toplevel]

    return forge_for


class ForgePublisher:
    def __init__(
        self, local: LocalPublisher, config: PublishConfig, forge_for: ForgeFactory
    ) -> None:
        self.local = local
        self.config = config
        self.forge_for = forge_for
        self.name: str = config.forge

    def open_pr(self, pr: PullRequest) -> str:
        """The PR on the forge (PublishRefused: the task escalates), then its local record."""
        record = self.local.relative(self.local.run_dir / "prs" / f"{pr.spec.id}.md")
        desired = desired_pr(
            pr.spec,
            self.config,
            branch=pr.evidence.branch or "",
            sha=pr.head,
            record_text=render_pr(pr),
            record=record,
            attempts=pr.evidence.attempts,
            agent_said=agent_summary(self.local.run_dir, pr.spec.id, pr.evidence.attempts),
        )
        outcome = converge(self.forge_for(pr.spec), desired)
        if outcome.stale is not None:
            raise PublishRefused(outcome.stale)
        self.local.open_pr(pr)
        return outcome.url or record

    def escalate(self, escalation: Escalation) -> str:
        """The local record, then what `publish.escalations` says: a draft PR labelled for a
        human, the branch only, or nothing. A forge's refusal leaves the local record."""
        path = self.local.escalate(escalation)
        spec, branch = escalation.spec, escalation.evidence.branch
        if self.config.escalations == "none" or not branch:
            return path
        sha = Remote(Path(spec.git_toplevel), self.config.remote).branch_commit(branch)
        if sha is None or sha == spec.base_commit:
            return path  # nothing was committed: no branch worth publishing
        desired = desired_escalation(
            spec,
            self.config,
            branch=branch,
            sha=sha,
            record_text=render_escalation(escalation),
            record=path,
            reason=escalation.reason,
            agent_said=agent_summary(self.local.run_dir, spec.id, escalation.evidence.attempts),
        )
        try:
            outcome = converge(self.forge_for(spec), desired)
        except PublishRefused:
            return path
        return outcome.url or path


def desired_from_records(
    spec: Spec,
    config: PublishConfig,
    local: LocalPublisher,
    *,
    outcome: str,
    branch: str | None,
    reason: str | None,
    attempts: int,
) -> Desired | str:
    """A finished task's desired state from the run's records (what `harness publish` works
    from), built as the run built it; or why there is nothing to publish."""
    verified = outcome == "verified"
    if not branch or outcome not in ("verified", "escalated"):
        return f"nothing to publish: the task ended {outcome} without a branch"
    if not verified and config.escalations == "none":
        return "nothing to publish: publish.escalations is none"
    path = local.run_dir / ("prs" if verified else "escalations") / f"{spec.id}.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return f"nothing to publish: its record {local.relative(path)} is missing"
    sha = Remote(Path(spec.git_toplevel), config.remote).branch_commit(branch)
    if sha is None:
        return f"nothing to publish: branch {branch} is gone from {spec.git_toplevel}"
    said = agent_summary(local.run_dir, spec.id, attempts)
    record = local.relative(path)
    if verified:
        return desired_pr(
            spec,
            config,
            branch=branch,
            sha=sha,
            record_text=text,
            record=record,
            attempts=attempts,
            agent_said=said,
        )
    return desired_escalation(
        spec,
        config,
        branch=branch,
        sha=sha,
        record_text=text,
        record=record,
        reason=reason or "escalated",
        agent_said=said,
    )


def desired_pr(
    spec: Spec,
    config: PublishConfig,
    *,
    branch: str,
    sha: str,
    record_text: str,
    record: str,
    attempts: int,
    agent_said: str | None = None,
) -> Desired:
    diff = Remote(Path(spec.git_toplevel), config.remote).diff(spec.base_commit, sha)
    return Desired(
        spec_id=spec.id,
        branch=branch,
        sha=sha,
        base=_base_branch(spec),
        title=spec.title,
        body=forge_body(record_text, diff, record, agent_said),
        draft=spec.tier in config.draft_tiers,
        labels=tuple(config.labels),
        reviewers=tuple(dict.fromkeys([*config.reviewers, *spec.reviewers])),
        verdict="success",
        summary=f"verified by harness on attempt {attempts}: every gate passed on this commit",
        record=record,
    )


def desired_escalation(
    spec: Spec,
    config: PublishConfig,
    *,
    branch: str,
    sha: str,
    record_text: str,
    record: str,
    reason: str,
    agent_said: str | None = None,
) -> Desired:
    diff = Remote(Path(spec.git_toplevel), config.remote).diff(spec.base_commit, sha)
    return Desired(
        spec_id=spec.id,
        branch=branch,
        sha=sha,
        base=_base_branch(spec),
        title=f"[{config.escalation_label}] {spec.title}",
        body=forge_body(record_text, diff, record, agent_said),
        draft=True,
        labels=tuple(dict.fromkeys([*config.labels, config.escalation_label])),
        reviewers=tuple(dict.fromkeys([*config.reviewers, *spec.reviewers])),
        verdict="failure",
        summary=redact.current().text(f"escalated: {' '.join(reason.split())}"),
        record=record,
        open_pr=config.escalations == "draft",
    )


def agent_summary(run_dir: Path, spec_id: str, attempt: int) -> str | None:
    """What the agent said of its last attempt (`finish`'s summary), from its attempt record."""
    try:
        saved = json.loads(
            (run_dir / "tasks" / spec_id / f"attempt-{attempt}.json").read_text("utf-8")
        )
    except (OSError, ValueError):
        return None
    said = saved.get("summary") if isinstance(saved, dict) else None
    return said if isinstance(said, str) else None


def _base_branch(spec: Spec) -> str | None:
    """The spec's `base:` when it names a branch (not a commit); else the remote's default."""
    base = spec.base
    if base is None or re.fullmatch(r"[0-9a-f]{7,40}", base) or base.startswith("refs/tags/"):
        return None
    return base.removeprefix("refs/heads/")


def forge_body(record_text: str, diff: str, record: str, agent_said: str | None = None) -> str:
    """The record as a PR body: sections longer than a screen collapsed, the agent's own
    summary marked as its words, the diff included collapsed when small, all of it within the
    forge's limit; secrets redacted."""
    title, *sections = re.split(r"(?m)^(?=## )", redact.current().text(record_text))
    parts = [title.rstrip() + "\n"]
    if agent_said and agent_said.strip():
        # The agent's text is untrusted: no HTML (it could close the <details> or fake the
        # sticky comment's marker), quoted, capped, and labelled as not evidence.
        said = html.escape(agent_said.strip()[:AGENT_SUMMARY_LIMIT], quote=False)
        quoted = "\n".join(f"> {line}" for line in redact.current().text(said).splitlines())
        parts.append(
            "<details><summary>The agent's summary (its own words, not evidence)</summary>"
            f"\n\n{quoted}\n\n</details>\n"
        )
    for section in sections:
        heading, _, content = section.partition("\n")
        if content.strip().count("\n") + 1 > COLLAPSE_LINES:
            summary = heading.removeprefix("## ").strip()
            section = f"<details><summary>{summary}</summary>\n\n{content.strip()}\n\n</details>\n"
        parts.append(section.rstrip() + "\n")
    diff = redact.current().text(diff)
    too_long = f"The diff ({len(diff)} characters) is too long to include here.\n"
    shown = too_long if diff else ""
    if diff and len(diff) <= DIFF_LIMIT:
        fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", diff))])
        shown = (
            f"<details><summary>Diff</summary>\n\n{fence}diff\n{diff.rstrip()}\n{fence}\n\n"
            "</details>\n"
        )
    footer = f"\n---\nFull record: `{record}` (harness).\n"
    evidence = "\n".join(parts)
    if len(evidence) + len(shown) + len(footer) + 1 > BODY_LIMIT:
        shown = too_long  # the evidence first; the diff is on the branch
    if len(evidence) + len(shown) + len(footer) + 1 > BODY_LIMIT:
        cut = f"\n\n… (cut to GitHub's {BODY_LIMIT}-character limit)\n"
        evidence = evidence[: BODY_LIMIT - len(cut) - len(shown) - len(footer) - 1] + cut
    return evidence + "\n" + shown + footer
