"""The Kubernetes backend of integration sandboxes: per changed service, a fork of the baseline
Deployment, a Service for it and an Istio route on the routing key, all owned by one ConfigMap
per namespace so that deleting it cascades; test runners as Jobs; teardown and reaping by label.

Entry points: `plan_for` (manifests, no writes), `open_fork` (apply), `KubernetesFork`
(`wait_ready`, `run_test`, `teardown`) and `reap` (for `harness gc`)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from harness.errors import InfrastructureError
from harness.integration.config import IntegrationConfig, ServiceMap
from harness.integration.kubernetes import manifests as m
from harness.integration.kubernetes.api import ClusterApi
from harness.integration.kubernetes.plan import ForkPlan, plan_fork, read_baselines, sandboxed
from harness.integration.kubernetes.readiness import (
    JobRun,
    job_command,
    run_test_job,
    wait_for_rollout,
)
from harness.integration.kubernetes.routes import install_route, remove_routes
from harness.problems import Problem

Manifest = m.Manifest


def _with_owner(manifest: Manifest, reference: Manifest) -> Manifest:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["ownerReferences"] = [reference]
    return manifest


def _create_or_keep(api: ClusterApi, manifest: Manifest, identity: m.ForkIdentity) -> Manifest:
    """Create; an object of the same name already labelled as this sandbox's is kept (a resumed
    run re-applies), anything else with that name is a conflict nobody should resolve silently."""
    try:
        return api.create(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise
    metadata = manifest["metadata"]
    existing = api.get(manifest["kind"], metadata["namespace"], metadata["name"])
    labels = (existing or {}).get("metadata", {}).get("labels", {})
    if existing is None or labels.get(m.LABEL_SANDBOX) != identity.labels[m.LABEL_SANDBOX]:
        raise InfrastructureError(
            f"{manifest['kind']} {metadata['namespace']}/{metadata['name']} exists and is not "
            "this sandbox's; harness will not overwrite it"
        )
    return existing


class KubernetesFork:
    """An applied sandbox. `teardown()` is idempotent and safe after a partial apply."""

    def __init__(self, api: ClusterApi, plan: ForkPlan) -> None:
        self.api = api
        self.plan = plan

    @classmethod
    def apply(cls, api: ClusterApi, plan: ForkPlan) -> KubernetesFork:
        sandbox = cls(api, plan)
        identity = plan.identity
        references: dict[str, Manifest] = {}
        for owner in plan.owners:  # first: every other object names its uid
            created = _create_or_keep(api, owner, identity)
            namespace = owner["metadata"]["namespace"]
            references[namespace] = m.owner_reference(identity, created["metadata"]["uid"])
        for service_plan in plan.services:
            reference = references[service_plan.namespace]
            for manifest in (service_plan.deployment, service_plan.fork_service):
                _create_or_keep(api, _with_owner(manifest, reference), identity)
            install_route(api, service_plan.service, identity, service_plan.route, reference)
        return sandbox

    def wait_ready(self, timeout_s: float | None = None, poll_s: float = 1.0) -> list[Problem]:
        """Wait for every fork's rollout (each up to `timeout_s`, default the policy's
        rollout_timeout_s); an infrastructure problem for each that fails."""
        timeout_s = timeout_s or self.api.backend.rollout_timeout_s
        problems: list[Problem] = []
        for service_plan in self.plan.services:
            metadata = service_plan.deployment["metadata"]
            problem = wait_for_rollout(
                self.api, metadata["namespace"], metadata["name"], timeout_s, poll_s
            )
            if problem is not None:
                problems.append(problem)
        return problems

    def run_test(self, command: str, poll_s: float = 1.0) -> JobRun:
        """Run the Job of one of the plan's test commands (an integration gate runs one)."""
        job = next((j for j in self.plan.jobs if job_command(j) == command), None)
        if job is None:
            planned = ", ".join(repr(job_command(j)) for j in self.plan.jobs) or "none"
            raise ValueError(f"no test Job for {command!r} in this sandbox's plan ({planned})")
        return self._run_job(job, poll_s)

    def _run_job(self, job: Manifest, poll_s: float) -> JobRun:
        """A fresh Job (generateName) owned by the sandbox's owner in the Job's namespace."""
        namespace = job["metadata"]["namespace"]
        owner = next(o for o in self.plan.owners if o["metadata"]["namespace"] == namespace)
        created = self.api.get("ConfigMap", namespace, owner["metadata"]["name"])
        if created is None:
            raise InfrastructureError(
                f"sandbox owner {namespace}/{owner['metadata']['name']} is gone"
            )
        reference = m.owner_reference(self.plan.identity, created["metadata"]["uid"])
        return run_test_job(self.api, _with_owner(job, reference), poll_s)

    def teardown(self) -> list[str]:
        identity = self.plan.identity
        return reap_in(self.api, self.plan.namespaces, identity.run_id, identity.sandbox)


def open_fork(
    integration: IntegrationConfig,
    service_map: ServiceMap,
    changed: Sequence[str],
    identity: m.ForkIdentity,
    commit: str | None,
    source: str,
    kubeconfig: Path | None = None,
    tests: Sequence[str] | None = None,
) -> KubernetesFork:
    """Connect (allowlist first), read the baselines, apply the sandbox. On a failed apply the
    partial sandbox is torn down before the error propagates."""
    api, plan = plan_for(
        integration, service_map, changed, identity, commit, source, kubeconfig, tests
    )
    try:
        return KubernetesFork.apply(api, plan)
    except BaseException:
        # The apply's own error is the one to report; a failing cleanup must not hide it
        # (and `harness gc` reaps what is left by label).
        with contextlib.suppress(Exception):
            reap_in(api, plan.namespaces, identity.run_id, identity.sandbox)
        raise


def plan_for(
    integration: IntegrationConfig,
    service_map: ServiceMap,
    changed: Sequence[str],
    identity: m.ForkIdentity,
    commit: str | None,
    source: str,
    kubeconfig: Path | None = None,
    tests: Sequence[str] | None = None,
) -> tuple[ClusterApi, ForkPlan]:
    """The plan from the cluster's baselines: reads only (what `harness sandbox plan` prints)."""
    services = sandboxed(service_map, changed, source)
    namespaces = {s.kubernetes.namespace for s in services if s.kubernetes is not None}
    api = ClusterApi.connect(integration.kubernetes, sorted(namespaces), source, kubeconfig)
    baselines = read_baselines(api, services)
    plan = plan_fork(identity, integration, service_map, services, baselines, commit, tests)
    return api, plan


REAP_ORDER = ("ConfigMap", "Job", "Service", "Deployment")
"""Owners first, so the cascade does the work; the rest are deleted by label in case the garbage
collector has not got to them (or an owner reference was lost)."""


def reap_in(
    api: ClusterApi,
    namespaces: Sequence[str],
    run_id: str | None = None,
    sandbox: str | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Remove harness's routes and objects (all runs, a run, or one sandbox of it); one line per
    thing removed (or that would be, with dry_run). Idempotent: a second call finds nothing."""
    done: list[str] = []
    selector = m.selector(run_id, sandbox)
    for namespace in namespaces:
        done += remove_routes(api, namespace, run_id, sandbox, dry_run)
        for kind in REAP_ORDER:
            for obj in api.list_objects(kind, namespace, selector):
                name = obj["metadata"]["name"]
                if dry_run or api.delete(kind, namespace, name):
                    done.append(
                        f"{'would delete' if dry_run else 'deleted'} {kind} {namespace}/{name}"
                    )
    return done


def reap(
    integration: IntegrationConfig,
    run_id: str | None = None,
    *,
    sandbox: str | None = None,
    dry_run: bool = False,
    kubeconfig: Path | None = None,
    source: str = "policy",
) -> list[str]:
    """`harness gc`: reap a run's (or every run's; or with `sandbox`, one task's) sandboxes in
    every allowlisted namespace of the allowlisted context. Without an allowlist nothing can
    have been created: nothing to do (and no kubeconfig is read)."""
    if sandbox is not None and run_id is None:
        raise ValueError("reap: a sandbox is named within a run; pass run_id too")
    backend = integration.kubernetes
    if not backend.contexts or not backend.namespaces:
        return []
    api = ClusterApi.connect(backend, backend.namespaces, source, kubeconfig)
    return reap_in(api, backend.namespaces, run_id, sandbox, dry_run)
