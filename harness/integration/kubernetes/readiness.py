"""Waiting on the cluster: a fork's rollout, and the integration test Jobs. A rollout that goes
wrong becomes a Problem carrying the pods' last log lines, so a human (or the agent's feedback)
sees the real runtime error, not just "not ready"; a Job's run is a JobRun, whose log the
integration gate parses like any gate's output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.integration.kubernetes.api import ClusterApi
from harness.integration.kubernetes.manifests import LABEL_FORK, Manifest
from harness.problems import Problem, problem_type

LOG_LINES = 40
GATE_LOG_LINES = 2000
"""How much of a test Job's log an integration gate records and parses (its failures)."""
FAILING_WAIT_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container waiting reasons that will not fix themselves by waiting longer."""
JOB_SLACK_S = 60
"""Past a Job's activeDeadlineSeconds, how long to wait for its controller to say so."""


def rollout_state(deployment: Manifest) -> str | None:
    """None when rolled out (as `kubectl rollout status` decides), else what is still missing."""
    spec_replicas = deployment.get("spec", {}).get("replicas", 1)
    status = deployment.get("status", {})
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 1):
        return "the Deployment controller has not observed the fork yet"
    updated = status.get("updatedReplicas", 0)
    if updated < spec_replicas:
        return f"{updated} of {spec_replicas} replicas updated"
    if status.get("replicas", 0) > updated:
        return "old replicas are still terminating"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return f"{available} of {updated} updated replicas available"
    return None


def _progress_deadline(deployment: Manifest) -> str | None:
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or "progress deadline exceeded")
    return None


def _container_statuses(pod: Manifest) -> list[dict[str, Any]]:
    status = pod.get("status", {})
    return list(status.get("initContainerStatuses", [])) + list(status.get("containerStatuses", []))


def _failing_container(pods: list[Manifest]) -> tuple[Manifest, dict[str, Any]] | None:
    for pod in pods:
        for container in _container_statuses(pod):
            if container.get("state", {}).get("waiting", {}).get("reason") in FAILING_WAIT_REASONS:
                return pod, container
    return None


def _log_section(api: ClusterApi, pod: Manifest, container: str, previous: bool) -> str:
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    text = api.pod_log(namespace, name, container, LOG_LINES, previous)
    if text is None and previous:  # no earlier instance: the current one's log, if any
        text = api.pod_log(namespace, name, container, LOG_LINES, False)
    if not text:
        return f"(no log from pod {name}, container {container}: it has not run)"
    which = "previous instance of " if previous else ""
    lines = text.rstrip("\n").splitlines()[-LOG_LINES:]
    return f"last {len(lines)} log lines of {which}pod {name}, container {container}:\n" + (
        "\n".join(lines)
    )


def _not_ready(namespace: str, name: str, code: str, summary: str, logs: list[str]) -> Problem:
    return Problem(
        type=problem_type("sandbox-not-ready"),
        title="A sandboxed service did not become ready",
        detail="\n\n".join([f"fork {namespace}/{name}: {summary}", *logs]),
        code=code,
        category="infrastructure",
        retryable=code == "RolloutTimeout",
        instance=f"kubernetes/{namespace}/deployments/{name}",
    )


def wait_for_rollout(
    api: ClusterApi, namespace: str, name: str, timeout_s: float, poll_s: float = 1.0
) -> Problem | None:
    """Poll the fork until rolled out; a failing container (image pull, crash loop), a progress
    deadline, or `timeout_s` returns an infrastructure problem with the pods' last log lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        deployment = api.get("Deployment", namespace, name)
        if deployment is None:
            return _not_ready(namespace, name, "ForkMissing", "the fork was deleted", [])
        state = rollout_state(deployment)
        if state is None:
            return None
        pods = api.list_objects("Pod", namespace, f"{LABEL_FORK}={name}")
        failing = _failing_container(pods)
        if failing is not None:
            pod, container = failing
            waiting = container["state"]["waiting"]
            reason = str(waiting["reason"])
            summary = f"container {container['name']}: {reason}: {waiting.get('message', '')}"
            log = _log_section(api, pod, container["name"], previous=reason == "CrashLoopBackOff")
            return _not_ready(namespace, name, reason, summary.rstrip(": "), [log])
        stalled = _progress_deadline(deployment)
        if stalled is not None or time.monotonic() >= deadline:
            code = "ProgressDeadlineExceeded" if stalled else "RolloutTimeout"
            summary = stalled or f"not rolled out after {timeout_s:g}s: {state}"
            logs = [
                _log_section(api, pod, status["name"], previous=False)
                for pod in pods
                for status in _container_statuses(pod)
            ]
            return _not_ready(namespace, name, code, summary, logs or ["(no pods were created)"])
        time.sleep(poll_s)


def _job_outcome(job: Manifest) -> tuple[str, str] | None:
    """(Complete|Failed, reason) once the Job controller has decided."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"]), str(condition.get("reason") or "")
    return None


@dataclass(frozen=True)
class JobRun:
    """One integration test Job, once its controller decided (or harness stopped waiting)."""

    namespace: str
    name: str
    command: str
    outcome: str
    """Complete or Failed."""
    reason: str
    """The condition's reason: BackoffLimitExceeded (the tests failed), DeadlineExceeded, …"""
    exit_code: int | None
    """The test container's exit code, when it terminated."""
    pod: str | None
    log: str | None
    """The last GATE_LOG_LINES lines of the test container's log; None when it has none."""
    duration_s: float
    deadline_s: int
    """The Job's activeDeadlineSeconds."""

    @property
    def passed(self) -> bool:
        return self.outcome == "Complete"

    @property
    def tests_failed(self) -> bool:
        """The tests ran and failed (a result for the change), not the Job machinery."""
        return self.reason == "BackoffLimitExceeded"


def job_command(job: Manifest) -> str:
    """The shell command a test Job runs (`/bin/sh -c COMMAND`)."""
    return str(job["spec"]["template"]["spec"]["containers"][0]["command"][-1])


def run_test_job(api: ClusterApi, manifest: Manifest, poll_s: float = 1.0) -> JobRun:
    """Create one test Job and wait for its Complete or Failed condition (at most its
    activeDeadlineSeconds plus JOB_SLACK_S); its pod's exit code and log."""
    started = time.monotonic()
    created = api.create(manifest)
    namespace, name = created["metadata"]["namespace"], created["metadata"]["name"]
    wait_s = manifest["spec"]["activeDeadlineSeconds"] + JOB_SLACK_S
    deadline = started + wait_s
    outcome = _job_outcome(created)
    while outcome is None and time.monotonic() < deadline:
        time.sleep(poll_s)
        job = api.get("Job", namespace, name)
        outcome = _job_outcome(job) if job is not None else ("Failed", "JobDeleted")
    kind, reason = outcome or ("Failed", f"NoOutcomeAfter{wait_s}s")
    pods = api.list_objects("Pod", namespace, f"job-name={name}")
    exit_codes = [
        s["state"]["terminated"].get("exitCode")
        for pod in pods[:1]
        for s in _container_statuses(pod)
        if "terminated" in s.get("state", {})
    ]
    pod = pods[0]["metadata"]["name"] if pods else None
    log = api.pod_log(namespace, pod, "tests", GATE_LOG_LINES, False) if pod else None
    return JobRun(
        namespace=namespace,
        name=name,
        command=job_command(manifest),
        outcome=kind,
        reason=reason,
        exit_code=exit_codes[0] if exit_codes else None,
        pod=pod,
        log=log,
        duration_s=round(time.monotonic() - started, 3),
        deadline_s=manifest["spec"]["activeDeadlineSeconds"],
    )
