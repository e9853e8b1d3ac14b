"""The manifests of a Kubernetes integration sandbox, as plain dicts: the per-namespace owner
ConfigMap, forks of baseline Deployments and their Services, the Istio header route, and test
Jobs. Pure functions: nothing here talks to a cluster, so `harness sandbox plan` and the tests
see exactly what would be applied."""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from harness.errors import InputError
from harness.integration.config import ServiceConfig

Manifest = dict[str, Any]

LABEL_RUN = "harness.dev/run"
LABEL_SANDBOX = "harness.dev/sandbox"
LABEL_ROUTING_KEY = "harness.dev/routing-key"
LABEL_ROLE = "harness.dev/role"
"""owner | fork | test | route-table (a VirtualService harness created, shared by sandboxes)."""
LABEL_FORK = "harness.dev/fork"
"""The fork's pod selector: a label no baseline Service or Deployment selects on."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "harness"}
ROUTE_PREFIX = "harness:"
"""Every HTTP route harness prepends is named harness:<run>:<sandbox>, so teardown and gc find
exactly their own routes in VirtualServices that other people own."""
OWNER_UID_PLACEHOLDER = "<uid of the owner ConfigMap, known once it is created>"
ISTIO_GROUP, ISTIO_VERSION, VS_PLURAL = "networking.istio.io", "v1", "virtualservices"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ROUTING_KEY = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Fields the API server owns: a fork copies the baseline's intent, never its state.
_SERVER_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def _digest(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def label_value(text: str) -> str:
    """`text` as a label value (63 chars of [-A-Za-z0-9_.], alphanumeric at both ends); long or
    rewritten values keep a hash suffix so two different inputs never share a label."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text).strip("-_.")
    return f"{cleaned[:52].rstrip('-_.')}-{_digest(text)}".lstrip("-")


@dataclass(frozen=True)
class ForkIdentity:
    """Who a sandbox's objects belong to: written into every label and route name."""

    run_id: str
    sandbox: str
    """The task (spec id)."""
    routing_key: str

    def __post_init__(self) -> None:
        if not _ROUTING_KEY.match(self.routing_key):
            raise InputError(
                f"routing key {self.routing_key!r}: use 1-63 of [a-z0-9-], alphanumeric at "
                "both ends (it is a label value and a regex literal)"
            )

    @property
    def suffix(self) -> str:
        """Names every object of this sandbox; stable, so a re-apply finds its own objects."""
        return _digest(self.run_id, self.sandbox)

    @property
    def labels(self) -> dict[str, str]:
        return {
            **MANAGED_BY,
            LABEL_RUN: label_value(self.run_id),
            LABEL_SANDBOX: label_value(self.sandbox),
            LABEL_ROUTING_KEY: self.routing_key,
        }

    @property
    def route_name(self) -> str:
        return f"{ROUTE_PREFIX}{label_value(self.run_id)}:{label_value(self.sandbox)}"

    @property
    def owner_name(self) -> str:
        return f"harness-sb-{self.suffix}"


def selector(run_id: str | None = None, sandbox: str | None = None) -> str:
    """The label selector of harness's objects: all runs, one run, or one sandbox of a run."""
    if run_id is None:
        return LABEL_RUN
    parts = [f"{LABEL_RUN}={label_value(run_id)}"]
    if sandbox is not None:
        parts.append(f"{LABEL_SANDBOX}={label_value(sandbox)}")
    return ",".join(parts)


def object_metadata(identity: ForkIdentity, name: str, namespace: str, role: str) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**identity.labels, LABEL_ROLE: role},
        "ownerReferences": [owner_reference(identity, None)],
    }


def owner_reference(identity: ForkIdentity, uid: str | None) -> Manifest:
    """Deleting the owner deletes every object that names it (the garbage collector cascades)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": identity.owner_name,
        "uid": uid or OWNER_UID_PLACEHOLDER,
    }


def owner_manifest(identity: ForkIdentity, namespace: str, record: dict[str, str]) -> Manifest:
    """The sandbox's owner in one namespace (owner references cannot cross namespaces). Its data
    is the sandbox's record: what it is, and each patched VirtualService's routes before."""
    metadata = object_metadata(identity, identity.owner_name, namespace, "owner")
    del metadata["ownerReferences"]
    data = {"run": identity.run_id, "sandbox": identity.sandbox, **record}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def fork_name(identity: ForkIdentity, service: ServiceConfig) -> str:
    """The fork's Deployment and Service name: a DNS-1035 label (starts with a letter)."""
    base = service.name[:40].rstrip("-")
    return f"{base if base[0].isalpha() else 's-' + base}-sb-{identity.suffix}"


def _set_env(container: Manifest, env: dict[str, str]) -> None:
    kept = [item for item in container.get("env", []) if item.get("name") not in env]
    container["env"] = kept + [{"name": name, "value": value} for name, value in env.items()]


def fill_image(template: str, commit: str | None, sandbox: str) -> str:
    return template.replace("{commit}", commit or "<task commit>").replace("{sandbox}", sandbox)


def fork_deployment(
    identity: ForkIdentity,
    service: ServiceConfig,
    baseline: Manifest,
    baseline_service: Manifest,
    commit: str | None,
) -> Manifest:
    """A copy of the baseline Deployment's spec under a new name, one replica, with the image
    and env overridden, and pod labels the baseline's Service and Deployment do not select."""
    assert service.kubernetes is not None
    spec = copy.deepcopy(baseline["spec"])
    name = fork_name(identity, service)
    template = spec["template"]
    labels = dict(template.get("metadata", {}).get("labels", {}))
    # Change every label the baseline's selectors use, or its Service would send baseline
    # traffic to the fork (and its ReplicaSet could count the fork's pods).
    selected = {
        **baseline_service.get("spec", {}).get("selector", {}),
        **spec.get("selector", {}).get("matchLabels", {}),
    }
    for key, value in selected.items():
        labels[key] = label_value(f"{value}-sb-{identity.suffix}")
    template.setdefault("metadata", {})["labels"] = {
        **labels,
        **identity.labels,
        LABEL_ROLE: "fork",
        LABEL_FORK: name,
    }
    template["metadata"].pop("creationTimestamp", None)  # the API server writes it as null
    spec["selector"] = {"matchLabels": {LABEL_FORK: name}}
    spec["replicas"] = 1
    containers = template["spec"]["containers"]
    wanted = service.kubernetes.container
    chosen = next((c for c in containers if c["name"] == wanted), None) if wanted else containers[0]
    if chosen is None:
        raise InputError(
            f"service {service.name}: kubernetes.container: no container {wanted!r} in "
            f"Deployment {service.kubernetes.deployment} (it has: "
            f"{', '.join(c['name'] for c in containers)})"
        )
    if service.kubernetes.image:
        chosen["image"] = fill_image(service.kubernetes.image, commit, identity.sandbox)
    _set_env(chosen, {"HARNESS_ROUTING_KEY": identity.routing_key, "HARNESS_SANDBOX": name})
    metadata = object_metadata(identity, name, service.kubernetes.namespace, "fork")
    baseline_labels = baseline.get("metadata", {}).get("labels", {})
    metadata["labels"] = {**baseline_labels, **metadata["labels"]}
    annotations = {
        k: v
        for k, v in baseline.get("metadata", {}).get("annotations", {}).items()
        if k not in _SERVER_ANNOTATIONS
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def fork_service(identity: ForkIdentity, service: ServiceConfig, baseline: Manifest) -> Manifest:
    """The baseline Service's ports (names kept: Istio reads the protocol from them), selecting
    the fork's pods only; cluster-assigned fields (clusterIP, nodePort) are left out."""
    assert service.kubernetes is not None
    ports = [
        {k: v for k, v in port.items() if k != "nodePort"}
        for port in baseline.get("spec", {}).get("ports", [])
    ]
    name = fork_name(identity, service)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(identity, name, service.kubernetes.namespace, "fork"),
        "spec": {"type": "ClusterIP", "selector": {LABEL_FORK: name}, "ports": ports},
    }


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def job_manifest(
    identity: ForkIdentity,
    namespace: str,
    index: int,
    command: str,
    image: str,
    env: dict[str, str],
    deadline_s: int,
    ttl_s: int,
) -> Manifest:
    """One integration test command as a Job: no retries (a failure is a result), a hard
    deadline, and a TTL so finished Jobs do not pile up even if teardown never runs."""
    metadata = object_metadata(identity, "", namespace, "test")
    # generateName: every run of the tests gets a fresh Job (a Job's pod template is immutable).
    del metadata["name"]
    metadata = {"generateName": f"harness-it-{identity.suffix}-{index}-", **metadata}
    pod_labels = {**identity.labels, LABEL_ROLE: "test", "sidecar.istio.io/inject": "true"}
    container = {
        "name": "tests",
        "image": image,
        "command": ["/bin/sh", "-c", command],
        "env": [{"name": name, "value": value} for name, value in env.items()],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "activeDeadlineSeconds": deadline_s,
            "ttlSecondsAfterFinished": ttl_s,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
