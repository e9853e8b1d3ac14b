"""A connection to one allowed kube context: the allowlist checks, and the few calls the backend
makes (create, read, list by label, JSON patch, delete) on plain dicts.

Every namespace and the context are checked against the policy's allowlist before any request:
an ephemeral worker must never touch a production namespace, even by mistake in a config."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from harness.errors import InfrastructureError, InputError
from harness.integration.config import KubernetesBackend
from harness.integration.kubernetes.manifests import ISTIO_GROUP, ISTIO_VERSION, VS_PLURAL, Manifest

# kind -> (API path prefix, plural). Requests go through the client's REST layer with dict
# bodies: its typed methods would coerce a baseline into its own models and refuse any field
# this client version does not know.
_PATHS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "VirtualService": (f"/apis/{ISTIO_GROUP}/{ISTIO_VERSION}", VS_PLURAL),
}
REQUEST_TIMEOUT_S = 30
VIRTUAL_SERVICE = "VirtualService"


def kubeconfig_path(explicit: Path | None = None) -> str:
    """$KUBECONFIG (read now, not at import as the client does) or ~/.kube/config."""
    if explicit is not None:
        return str(explicit)
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def check_namespaces(backend: KubernetesBackend, namespaces: Iterable[str], source: str) -> None:
    for namespace in namespaces:
        if namespace not in backend.namespaces:
            allowed = ", ".join(backend.namespaces) or "none"
            raise InputError(
                f"{source}: namespace {namespace!r} is not in integration.kubernetes.namespaces "
                f"(allowed: {allowed}); harness refuses to act outside the allowlist"
            )


def _kubeconfig_contexts(config_file: str) -> tuple[list[str], str | None]:
    """Context names and the current context of a kubeconfig (a $KUBECONFIG-style list of
    files merges: the first file naming a context or a current-context wins, as kubectl does).
    Read here rather than by the client, which insists on a current-context."""
    names: list[str] = []
    current: str | None = None
    paths = [Path(p).expanduser() for p in config_file.split(os.pathsep) if p]
    if not any(path.is_file() for path in paths):
        raise InputError(f"{config_file}: no kubeconfig there (set $KUBECONFIG)")
    for path in paths:
        if not path.is_file():
            continue
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(
                f"{path}: cannot read kubeconfig: {' '.join(str(exc).split())}"
            ) from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: a kubeconfig is a YAML mapping")
        for context in raw.get("contexts") or []:
            if isinstance(context, dict) and context.get("name") not in names:
                names.append(str(context.get("name")))
        current = current or raw.get("current-context") or None
    return names, current


def resolve_context(backend: KubernetesBackend, config_file: str, source: str) -> str:
    """The context to use, refused unless allowlisted. Reads the kubeconfig file only."""
    contexts, current = _kubeconfig_contexts(config_file)
    name = backend.context or current
    allowed = ", ".join(backend.contexts) or "none"
    if name is None:
        raise InputError(
            f"{config_file}: no current context; set integration.kubernetes.context "
            f"(allowed: {allowed})"
        )
    if name not in backend.contexts:
        raise InputError(
            f"{source}: kube context {name!r} is not in integration.kubernetes.contexts "
            f"(allowed: {allowed}); harness refuses to act outside the allowlist"
        )
    if name not in contexts:
        raise InputError(
            f"{config_file}: no context named {name!r} (has: {', '.join(contexts) or 'none'})"
        )
    return name


class ClusterApi:
    """Raw-JSON calls on one allowlisted context. Objects stay dicts end to end, so a baseline
    read here is copied field for field, including fields this client version does not model."""

    def __init__(self, api_client: Any, context: str, backend: KubernetesBackend) -> None:
        self.client = api_client
        self.context = context
        self.backend = backend
        self.core = k8s.CoreV1Api(api_client)

    @classmethod
    def connect(
        cls,
        backend: KubernetesBackend,
        namespaces: Iterable[str],
        source: str,
        kubeconfig_file: Path | None = None,
    ) -> ClusterApi:
        """Check the context and `namespaces` against the allowlist, then build a client."""
        check_namespaces(backend, namespaces, source)
        config_file = kubeconfig_path(kubeconfig_file)
        context = resolve_context(backend, config_file, source)
        api_client = kubeconfig.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=context
        )
        return cls(api_client, context, backend)

    def _request(
        self,
        method: str,
        kind: str,
        namespace: str,
        name: str | None = None,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Manifest:
        if namespace not in self.backend.namespaces:  # the last line of defence
            raise InputError(f"namespace {namespace!r} is not allowlisted ({method} {kind})")
        prefix, plural = _PATHS[kind]
        path = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
        if name is not None:
            path += "/" + quote(name)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(*request, _request_timeout=REQUEST_TIMEOUT_S)
            response.read()
        except HTTPError as exc:
            raise InfrastructureError(
                f"kube context {self.context!r}: cannot reach the API server ({exc})"
            ) from None
        if not 200 <= response.status <= 299:
            text = response.data.decode("utf-8", "replace")
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        result: Manifest = json.loads(response.data or b"{}")
        return result

    def create(self, manifest: Manifest) -> Manifest:
        namespace = manifest["metadata"]["namespace"]
        return self._request("POST", manifest["kind"], namespace, body=manifest)

    def get(self, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self._request("GET", kind, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_objects(
        self, kind: str, namespace: str, label_selector: str | None = None
    ) -> list[Manifest]:
        query = {} if label_selector is None else {"labelSelector": label_selector}
        items: list[Manifest] = self._request("GET", kind, namespace, query=query)["items"]
        return items

    def json_patch(self, kind: str, namespace: str, name: str, ops: list[Manifest]) -> Manifest:
        """RFC 6902: ops apply atomically on the server, so concurrent sandboxes prepending to
        one VirtualService never overwrite each other's routes (no read-modify-replace)."""
        content_type = "application/json-patch+json"
        return self._request("PATCH", kind, namespace, name, body=ops, content_type=content_type)

    def delete(
        self, kind: str, namespace: str, name: str, resource_version: str | None = None
    ) -> bool:
        """Delete in the background (dependents cascade); False when it was already gone.
        With `resource_version`, only that version is deleted (409 if it changed)."""
        body: Manifest = {"propagationPolicy": "Background"}
        if resource_version is not None:
            body["preconditions"] = {"resourceVersion": resource_version}
        try:
            self._request("DELETE", kind, namespace, name, body=body)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, previous: bool
    ) -> str | None:
        """The last lines of a container's log; None when it has none (never started)."""
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=tail_lines, previous=previous
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise
        except HTTPError as exc:
            raise InfrastructureError(f"kube context {self.context!r}: {exc}") from None
        return text
