"""A sandbox's plan: the baselines read from the cluster (reads only) and every manifest that
would be applied, built from them without further API calls. `harness sandbox plan` prints it;
`KubernetesFork.apply` applies it."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException

from harness.errors import InfrastructureError, InputError
from harness.integration.config import IntegrationConfig, ServiceConfig, ServiceMap
from harness.integration.kubernetes import manifests as m
from harness.integration.kubernetes.api import VIRTUAL_SERVICE, ClusterApi
from harness.integration.kubernetes.routes import fork_route, route_table, routes_service
from harness.integration.routing_key import TRACESTATE_KEY

Manifest = m.Manifest


@dataclass(frozen=True)
class ClusterBaseline:
    """What a fork copies: the baseline's objects as the cluster has them."""

    deployment: Manifest
    service: Manifest
    virtual_service: Manifest | None
    """The VirtualService routing mesh traffic to the Service; None: harness creates one."""


@dataclass
class ServicePlan:
    service: ServiceConfig
    deployment: Manifest
    fork_service: Manifest
    route: Manifest
    virtual_service: Manifest
    """The VirtualService as it will be: created, or the existing one with `route` first."""
    patched: bool
    """True: an existing VirtualService gets `route` prepended (and removed at teardown)."""

    @property
    def namespace(self) -> str:
        return str(self.deployment["metadata"]["namespace"])


@dataclass
class ForkPlan:
    identity: m.ForkIdentity
    owners: list[Manifest]
    services: list[ServicePlan]
    jobs: list[Manifest] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return [owner["metadata"]["namespace"] for owner in self.owners]

    def manifests(self) -> list[Manifest]:
        """Everything in apply order: owners first (the others reference them), Jobs last."""
        objects = list(self.owners)
        for plan in self.services:
            objects += [plan.deployment, plan.fork_service, plan.virtual_service]
        return objects + self.jobs


def sandboxed(service_map: ServiceMap, changed: Sequence[str], source: str) -> list[ServiceConfig]:
    """The changed services, each of which must say where its baseline lives."""
    by_name = {service.name: service for service in service_map.services}
    chosen: list[ServiceConfig] = []
    for name in changed:
        service = by_name.get(name)
        if service is None:
            raise InputError(f"{source}: no service named {name!r} in the service map")
        if service.kubernetes is None:
            raise InputError(
                f"{source}: service {name}: no `kubernetes:` section (namespace, deployment, "
                "service); the Kubernetes backend needs its baseline"
            )
        chosen.append(service)
    return chosen


Lookup = Callable[[str, str, str], Manifest | None]
"""(kind, namespace, name) -> the object, or None."""


def _collect(
    services: Sequence[ServiceConfig],
    get: Lookup,
    virtual_services: Callable[[str], list[Manifest]],
    where: str,
) -> dict[str, ClusterBaseline]:
    baselines: dict[str, ClusterBaseline] = {}
    for service in services:
        k8s = service.kubernetes
        assert k8s is not None
        here = f"{where}, namespace {k8s.namespace}"
        deployment = get("Deployment", k8s.namespace, k8s.deployment)
        if deployment is None:
            raise InputError(f"service {service.name}: no Deployment {k8s.deployment!r} ({here})")
        baseline_service = get("Service", k8s.namespace, k8s.service)
        if baseline_service is None:
            raise InputError(f"service {service.name}: no Service {k8s.service!r} ({here})")
        chosen = choose_virtual_service(service, virtual_services(k8s.namespace), here)
        baselines[service.name] = ClusterBaseline(deployment, baseline_service, chosen)
    return baselines


def read_baselines(
    api: ClusterApi, services: Sequence[ServiceConfig]
) -> dict[str, ClusterBaseline]:
    """Read each service's baseline Deployment, Service and VirtualService (no writes)."""

    def virtual_services(namespace: str) -> list[Manifest]:
        try:
            return api.list_objects(VIRTUAL_SERVICE, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise InfrastructureError(
                    f"kube context {api.context!r}: the VirtualService API "
                    f"({m.ISTIO_GROUP}/{m.ISTIO_VERSION}) is missing; the Kubernetes backend "
                    "needs Istio installed"
                ) from None
            raise

    return _collect(services, api.get, virtual_services, f"kube context {api.context!r}")


def baselines_from_documents(
    documents: list[Manifest], services: Sequence[ServiceConfig], source: str
) -> dict[str, ClusterBaseline]:
    """The baselines from YAML documents (e.g. `kubectl get deploy,svc,virtualservice -o yaml`),
    for planning without a cluster; List documents are flattened."""
    objects: dict[tuple[str, str, str], Manifest] = {}
    for document in documents:
        for obj in document.get("items", []) if document.get("kind") == "List" else [document]:
            metadata = obj.get("metadata", {})
            key = (obj.get("kind", ""), metadata.get("namespace", ""), metadata.get("name", ""))
            objects[key] = obj

    def virtual_services(namespace: str) -> list[Manifest]:
        return [o for (k, ns, _), o in objects.items() if k == VIRTUAL_SERVICE and ns == namespace]

    def get(kind: str, namespace: str, name: str) -> Manifest | None:
        return objects.get((kind, namespace, name))

    return _collect(services, get, virtual_services, source)


def choose_virtual_service(
    service: ServiceConfig, candidates: list[Manifest], where: str
) -> Manifest | None:
    """The VirtualService routing mesh traffic to the baseline Service: the one named in the
    config, else the only one whose hosts name it; None when there is none."""
    k8s = service.kubernetes
    assert k8s is not None
    if k8s.virtual_service is not None:
        named = [vs for vs in candidates if vs["metadata"]["name"] == k8s.virtual_service]
        if not named:
            raise InputError(
                f"service {service.name}: kubernetes.virtual_service: no VirtualService "
                f"{k8s.virtual_service!r} ({where})"
            )
        return named[0]
    routing = [vs for vs in candidates if routes_service(vs, service)]
    if len(routing) > 1:
        names = ", ".join(vs["metadata"]["name"] for vs in routing)
        raise InputError(
            f"service {service.name}: several VirtualServices route {k8s.service} ({names}); "
            "name one in kubernetes.virtual_service"
        )
    return routing[0] if routing else None


def _patched_view(existing: Manifest, route: Manifest, service: ServiceConfig) -> Manifest:
    """The existing VirtualService as it will read once `route` is prepended (for review)."""
    http = existing.get("spec", {}).get("http")
    if not http:
        raise InputError(
            f"service {service.name}: VirtualService {existing['metadata']['name']} has no "
            "http routes; harness only prepends to HTTP routes (route the service over HTTP)"
        )
    view = copy.deepcopy(existing)
    view.pop("status", None)
    metadata = view["metadata"]
    view["metadata"] = {
        key: metadata[key] for key in ("name", "namespace", "labels") if key in metadata
    }
    view["spec"]["http"] = [route] + [r for r in http if r.get("name") != route["name"]]
    return view


def plan_fork(
    identity: m.ForkIdentity,
    integration: IntegrationConfig,
    service_map: ServiceMap,
    services: Sequence[ServiceConfig],
    baselines: dict[str, ClusterBaseline],
    commit: str | None = None,
    tests: Sequence[str] | None = None,
) -> ForkPlan:
    """The manifests of one sandbox, from baselines already read: no API calls. `tests`: the
    integration test commands (the spec's), default the service map's."""
    plans: list[ServicePlan] = []
    for service in services:
        baseline = baselines[service.name]
        route = fork_route(identity, service, integration.baggage_key)
        if baseline.virtual_service is None:
            virtual_service, patched = route_table(identity, service, route), False
        else:
            virtual_service = _patched_view(baseline.virtual_service, route, service)
            patched = True
        deployment = m.fork_deployment(
            identity, service, baseline.deployment, baseline.service, commit
        )
        fork_service = m.fork_service(identity, service, baseline.service)
        plans.append(
            ServicePlan(service, deployment, fork_service, route, virtual_service, patched)
        )
    namespaces = list(dict.fromkeys(plan.namespace for plan in plans))
    owners = [
        m.owner_manifest(identity, namespace, _record(identity, plans, baselines, namespace))
        for namespace in namespaces
    ]
    plan = ForkPlan(identity, owners, plans)
    commands = service_map.tests if tests is None else list(tests)
    if commands and plans:
        plan.jobs = _jobs(identity, integration, service_map, plans, commands, commit)
    return plan


def _record(
    identity: m.ForkIdentity,
    plans: list[ServicePlan],
    baselines: dict[str, ClusterBaseline],
    namespace: str,
) -> dict[str, str]:
    """What the owner ConfigMap records: the routing key, and for each VirtualService it patches
    the routes that were there before (teardown removes exactly our route by name)."""
    touched = []
    for plan in plans:
        if plan.namespace != namespace:
            continue
        before = baselines[plan.service.name].virtual_service
        touched.append(
            {
                "name": plan.virtual_service["metadata"]["name"],
                "created": not plan.patched,
                "route": identity.route_name,
                "http_before": None if before is None else before["spec"].get("http", []),
            }
        )
    return {"routing-key": identity.routing_key, "virtualservices.json": json.dumps(touched)}


def _jobs(
    identity: m.ForkIdentity,
    integration: IntegrationConfig,
    service_map: ServiceMap,
    plans: list[ServicePlan],
    commands: Sequence[str],
    commit: str | None,
) -> list[Manifest]:
    backend = integration.kubernetes
    if backend.test_image is None:
        raise InputError(
            "integration.kubernetes.test_image: required to run integration tests as Jobs (an "
            "image holding the repository's integration tests)"
        )
    key = identity.routing_key
    # What the local backend gives its tests too. The trace id is derived from the key, so a
    # plan reads the same every time; each test request may still start its own trace.
    trace_id = hashlib.sha256(key.encode()).hexdigest()
    env = {
        "HARNESS_ROUTING_KEY": key,
        "HARNESS_BAGGAGE": f"{integration.baggage_key}={key}",
        "HARNESS_TRACEPARENT": f"00-{trace_id[:32]}-{trace_id[32:48]}-01",
        "HARNESS_TRACESTATE": f"{TRACESTATE_KEY}={key}",
        "HARNESS_SANDBOXED": ",".join(sorted(plan.service.name for plan in plans)),
    }
    for service in service_map.services:
        if service.kubernetes is not None:
            variable = "HARNESS_URL_" + service.name.upper().replace("-", "_")
            host = m.service_host(service.kubernetes.service, service.kubernetes.namespace)
            env[variable] = f"http://{host}:{service.kubernetes.port}"
    image = m.fill_image(backend.test_image, commit, identity.sandbox)
    namespace = plans[0].namespace
    deadline, ttl = backend.job_deadline_s, backend.job_ttl_s
    return [
        m.job_manifest(identity, namespace, index, command, image, env, deadline, ttl)
        for index, command in enumerate(commands)
    ]
