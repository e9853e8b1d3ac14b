"""A small Kubernetes API server emulator on 127.0.0.1, for the Kubernetes backend's tests.

Why not kmock: it ignores label selectors (reaping by label could not fail), applies
every PATCH as a naive dict merge (harness sends RFC 6902 JSON patches with `test` ops to
VirtualServices), has no garbage collector (ownerReference cascades could not be observed), no
pod log endpoint, and runs in an asyncio loop the synchronous official client would have to be
bridged to. This one is small, synchronous and strict where it matters here.

What it does, over the REST paths the official client uses (core v1 configmaps/services/pods,
apps/v1 deployments, batch/v1 jobs, networking.istio.io/v1 virtualservices):
create (201; 409 if it exists; generateName; name, label and ownerReference validation as the
API server does it), get, list with labelSelector (=, ==, !=, exists, !exists, in, notin),
PATCH as JSON patch (RFC 6902 incl. `test`, 422 on failure) or merge patch (RFC 7386),
resourceVersion and generation bookkeeping, delete with preconditions and propagationPolicy
(Background/Foreground cascade through ownerReferences: a dependent goes once all its owners
are gone; Orphan strips the reference), and pod logs (tailLines, previous).

What it does NOT do: scheduling, controllers (a test plays the Deployment or Job controller
with an `on_create` hook, see k8s_controllers.py), admission webhooks, RBAC, quota, watch,
strategic merge or server-side apply (415), OpenAPI field validation (the tests run
kubernetes-validate instead), namespaces as objects, and the garbage collector's timing (here a
cascade is immediate).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from k8s_patch import ApiError, json_patch, matches, merge_patch

Obj = dict[str, Any]
Hook = Callable[["KubeEmulator", Obj], None]

RESOURCES = {
    ("", "v1", "configmaps"): "ConfigMap",
    ("", "v1", "services"): "Service",
    ("", "v1", "pods"): "Pod",
    ("apps", "v1", "deployments"): "Deployment",
    ("batch", "v1", "jobs"): "Job",
    ("networking.istio.io", "v1", "virtualservices"): "VirtualService",
}
API_VERSION = {kind: (f"{g}/{v}" if g else v) for (g, v, _), kind in RESOURCES.items()}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>log))?)?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_GENERATED = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet


# --- the store ---------------------------------------------------------------------------------


class KubeEmulator:
    def __init__(self, istio: bool = True) -> None:
        self.istio = istio
        """False: the VirtualService API is missing, as in a cluster without Istio."""
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.requests: list[tuple[str, str, str]] = []
        """(method, path?query, content type) of every request, in order."""
        self.logs: dict[tuple[str, str, str, bool], str] = {}
        self.on_create: dict[str, Hook] = {}
        """kind -> a stand-in controller run after each create of that kind."""
        self.lock = threading.RLock()
        self._versions = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.emulator = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubeEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, contexts: tuple[str, ...], current: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": name, "context": {"cluster": "emulator", "user": "tester"}}
                for name in contexts
            ],
            "current-context": current,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- what tests call directly -------------------------------------------------------------

    def seed(self, manifest: Obj) -> Obj:
        """Store an object as if created (a baseline a test starts from); no hooks run."""
        with self.lock:
            return self._create(manifest["kind"], manifest["metadata"]["namespace"], manifest)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            found = self.objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def all(self, kind: str, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(obj)
                for (k, ns, _), obj in sorted(self.objects.items())
                if k == kind and namespace in (None, ns)
            ]

    def set_status(self, kind: str, namespace: str, name: str, status: Obj) -> None:
        with self.lock:
            self.objects[(kind, namespace, name)]["status"] = status
            self._bump(self.objects[(kind, namespace, name)], spec_changed=False)

    def writes(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    # --- the API ------------------------------------------------------------------------------

    def _bump(self, obj: Obj, spec_changed: bool) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        if spec_changed and "generation" in obj["metadata"]:
            obj["metadata"]["generation"] += 1

    def _validate(self, kind: str, obj: Obj) -> None:
        metadata = obj.get("metadata", {})
        name = metadata.get("name", "")
        pattern = _DNS_1035 if kind == "Service" else _DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > (63 if kind == "Service" else 253):
            raise ApiError(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
        for key, value in metadata.get("labels", {}).items():
            if not _LABEL_NAME.match(key) or not isinstance(value, str) or len(value) > 63:
                raise ApiError(422, "Invalid", f"metadata.labels: Invalid value: {key}={value!r}")
            if not _LABEL_VALUE.match(value):
                raise ApiError(422, "Invalid", f"metadata.labels: Invalid value: {value!r}")
        for ref in metadata.get("ownerReferences", []):
            if not all(ref.get(f) for f in ("apiVersion", "kind", "name", "uid")):
                raise ApiError(422, "Invalid", f"metadata.ownerReferences: incomplete {ref}")

    def _create(self, kind: str, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if obj.get("kind") != kind or obj.get("apiVersion") != API_VERSION[kind]:
            raise ApiError(400, "BadRequest", f"kind/apiVersion do not match {kind} path")
        if metadata.setdefault("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match")
        if not metadata.get("name") and metadata.get("generateName"):
            suffix = "".join(secrets.choice(_GENERATED) for _ in range(5))
            metadata["name"] = metadata["generateName"] + suffix
        self._validate(kind, obj)
        key = (kind, namespace, metadata["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{kind} "{metadata["name"]}" already exists')
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if kind in ("Deployment", "Job", "VirtualService"):
            metadata["generation"] = 1
        self._bump(obj, spec_changed=False)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _delete(self, key: tuple[str, str, str], options: Obj) -> None:
        obj = self.objects[key]
        pre = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if pre.get(field) and pre[field] != obj["metadata"][field]:
                raise ApiError(409, "Conflict", f"Precondition failed: {field} mismatch")
        del self.objects[key]
        uid = obj["metadata"]["uid"]
        if options.get("propagationPolicy") == "Orphan":
            for other in self.objects.values():
                refs = other["metadata"].get("ownerReferences", [])
                other["metadata"]["ownerReferences"] = [r for r in refs if r["uid"] != uid]
            return
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """A dependent is deleted once none of its owners exists any more."""
        while True:
            alive = {obj["metadata"]["uid"] for obj in self.objects.values()}
            orphaned = [
                key
                for key, obj in self.objects.items()
                if obj["metadata"].get("ownerReferences")
                and not any(ref["uid"] in alive for ref in obj["metadata"]["ownerReferences"])
            ]
            if not orphaned:
                return
            for key in orphaned:
                del self.objects[key]

    def _patch(self, key: tuple[str, str, str], body: Any, content_type: str) -> Obj:
        current = self.objects[key]
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
            patched = json_patch(current, body)
        elif content_type.startswith("application/merge-patch+json"):
            patched = merge_patch(current, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"emulator: no {content_type} patches")
        before, after = current["metadata"], patched.get("metadata", {})
        for field in ("name", "namespace", "uid", "creationTimestamp"):
            if after.get(field) != before.get(field):
                raise ApiError(422, "Invalid", f"metadata.{field}: field is immutable")
        wanted_version = None
        if isinstance(body, dict) and body.get("metadata", {}).get("resourceVersion"):
            wanted_version = body["metadata"]["resourceVersion"]
        if wanted_version not in (None, before["resourceVersion"]):
            raise ApiError(409, "Conflict", "the object has been modified")
        self._validate(key[0], patched)
        self._bump(patched, spec_changed=patched.get("spec") != current.get("spec"))
        self.objects[key] = patched
        return copy.deepcopy(patched)

    def _pod_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self.objects.get(("Pod", namespace, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or (containers[0] if len(containers) == 1 else None)
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container!r} is not valid for pod")
        previous = query.get("previous") == "true"
        text = self.logs.get((namespace, name, container, previous))
        if text is None:
            what = "previous terminated container" if previous else "container"
            raise ApiError(400, "BadRequest", f'{what} "{container}" in pod "{name}" has no log')
        lines = text.splitlines(keepends=True)
        tail = int(query.get("tailLines", len(lines)))
        return "".join(lines[-tail:] if tail else [])

    def handle(self, method: str, target: str, content_type: str, raw: bytes) -> tuple[int, Any]:
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        found = _PATH.match(split.path)
        group = "" if found and found.group("core") else (found.group("group") if found else "")
        version = (found.group("core") or found.group("version")) if found else ""
        kind = RESOURCES.get((group, version, found.group("plural"))) if found else None
        if found is None or kind is None or (kind == "VirtualService" and not self.istio):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name, sub = found.group("ns"), found.group("name"), found.group("sub")
        body = json.loads(raw) if raw else None
        with self.lock:
            if sub == "log" and kind == "Pod" and method == "GET":
                return 200, self._pod_log(namespace, name, query)
            if name is None and method == "GET":
                items = [
                    copy.deepcopy(obj)
                    for (k, ns, _), obj in sorted(self.objects.items())
                    if k == kind
                    and ns == namespace
                    and matches(query.get("labelSelector", ""), obj["metadata"].get("labels", {}))
                ]
                listing = {"apiVersion": API_VERSION[kind], "kind": f"{kind}List", "items": items}
                return 200, {**listing, "metadata": {"resourceVersion": "1"}}
            if name is None and method == "POST":
                created = self._create(kind, namespace, body or {})
                if kind in self.on_create:
                    self.on_create[kind](self, created)
                return 201, self.get(kind, namespace, created["metadata"]["name"]) or created
            key = (kind, namespace, name or "")
            if key not in self.objects:
                raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
            if method == "GET":
                return 200, copy.deepcopy(self.objects[key])
            if method == "PATCH":
                return 200, self._patch(key, body, content_type)
            if method == "DELETE":
                options = {**(body or {}), **query}
                self._delete(key, options)
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        emulator: KubeEmulator = self.server.emulator  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        emulator.requests.append((self.command, self.path, content_type))
        try:
            status, payload = emulator.handle(self.command, self.path, content_type, raw)
        except ApiError as exc:
            status = exc.code
            payload = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": exc.message,
                "reason": exc.reason,
                "code": exc.code,
            }
        text = payload if isinstance(payload, str) else json.dumps(payload)
        data = text.encode()
        self.send_response(status)
        kind = "text/plain" if isinstance(payload, str) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: failures show up as the client's exceptions
