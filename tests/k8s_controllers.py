"""Stand-ins for the Deployment and Job controllers and the kubelet, for the emulator's
`on_create` hooks: they set the statuses, pods and logs a cluster would, instantly."""

from __future__ import annotations

import copy
from collections.abc import Callable

from k8s_emulator import Hook, KubeEmulator, Obj


def _pod_for(emulator: KubeEmulator, owner: Obj, name: str, labels: dict[str, str]) -> Obj:
    # Owned by the Deployment or Job itself (a real pod's owner is a ReplicaSet or the Job), so
    # deleting the workload removes its pods here too.
    reference = {key: owner["metadata"][key] for key in ("name", "uid")}
    reference.update(apiVersion=owner["apiVersion"], kind=owner["kind"])
    metadata = {"name": name, "namespace": owner["metadata"]["namespace"], "labels": labels}
    metadata["ownerReferences"] = [reference]
    spec = copy.deepcopy(owner["spec"]["template"]["spec"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return emulator._create("Pod", owner["metadata"]["namespace"], pod)


def rolls_out(emulator: KubeEmulator, deployment: Obj) -> None:
    """The Deployment controller and kubelet when all goes well: a Running pod, full status."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    name = deployment["metadata"]["name"]
    pod = _pod_for(emulator, deployment, f"{name}-7d4b9c-x2x9q", labels)
    replicas = deployment["spec"].get("replicas", 1)
    statuses = [
        {"name": c["name"], "ready": True, "state": {"running": {}}}
        for c in pod["spec"]["containers"]
    ]
    emulator.set_status(
        "Pod",
        pod["metadata"]["namespace"],
        pod["metadata"]["name"],
        {"phase": "Running", "containerStatuses": statuses},
    )
    emulator.set_status(
        "Deployment",
        deployment["metadata"]["namespace"],
        name,
        {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    )


def fails_with(reason: str, message: str, logs: str | None) -> Hook:
    """A pod whose container is stuck waiting with `reason`; `logs` are those of the previous
    (crashed) instance for CrashLoopBackOff. The Deployment never becomes available."""

    def hook(emulator: KubeEmulator, deployment: Obj) -> None:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        name = deployment["metadata"]["name"]
        namespace = deployment["metadata"]["namespace"]
        pod = _pod_for(emulator, deployment, f"{name}-5f6d7-k8m2p", labels)
        container = pod["spec"]["containers"][0]["name"]
        waiting = {"waiting": {"reason": reason, "message": message}}
        status = {"name": container, "ready": False, "restartCount": 3, "state": waiting}
        emulator.set_status(
            "Pod",
            namespace,
            pod["metadata"]["name"],
            {"phase": "Pending", "containerStatuses": [status]},
        )
        if logs is not None:
            key = (namespace, pod["metadata"]["name"], container, reason == "CrashLoopBackOff")
            emulator.logs[key] = logs
        emulator.set_status(
            "Deployment",
            namespace,
            name,
            {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "unavailableReplicas": 1,
            },
        )

    return hook


def jobs_finish(outcome: Callable[[str], tuple[str, str, int, str]]) -> Hook:
    """The Job controller: `outcome(command)` gives (Complete|Failed, reason, exit code, log)."""

    def hook(emulator: KubeEmulator, job: Obj) -> None:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        command = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        kind, reason, exit_code, log = outcome(command)
        labels = {"job-name": name, "batch.kubernetes.io/job-name": name}
        pod = _pod_for(emulator, job, f"{name}-abcde", labels)
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
            }
        }
        emulator.set_status(
            "Pod",
            namespace,
            pod["metadata"]["name"],
            {
                "phase": "Succeeded" if kind == "Complete" else "Failed",
                "containerStatuses": [{"name": "tests", "ready": False, "state": state}],
            },
        )
        emulator.logs[(namespace, pod["metadata"]["name"], "tests", False)] = log
        condition = {"type": kind, "status": "True", "reason": reason}
        emulator.set_status("Job", namespace, name, {"conditions": [condition]})

    return hook
