"""The sandbox's Istio route: built (a regex header match on the routing key), prepended to the
VirtualService of a baseline Service, and removed again by name. Only JSON patches touch a
VirtualService (never a replace), so routes that other sandboxes or people add meanwhile
survive; a `test` op guards each removal by index."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from harness.errors import InfrastructureError
from harness.integration.config import ServiceConfig
from harness.integration.kubernetes import manifests as m
from harness.integration.kubernetes.api import VIRTUAL_SERVICE, ClusterApi
from harness.integration.routing_key import TRACESTATE_KEY

Manifest = m.Manifest
ATTEMPTS = 5
"""Re-reads when another writer changed the VirtualService between our read and our patch."""


def member_regex(key: str, value: str) -> str:
    """An RE2 regex (Envoy matches it against the whole header value) matching a W3C list header
    (baggage, tracestate) that has the member `key=value`, wherever it is in the list, with
    optional whitespace and baggage properties (`;prop`), and no other value or key."""
    # Keys and values are limited to [A-Za-z0-9_.-], where only the dot is special.
    key_re, value_re = (text.replace(".", r"\.") for text in (key, value))
    return rf"^(.*,)?\s*{key_re}\s*=\s*{value_re}\s*(;[^,]*)?(,.*)?$"


def route_matches(name: str, run_id: str | None = None, sandbox: str | None = None) -> bool:
    """Whether an HTTP route's name is one of harness's routes in that scope."""
    if run_id is None:
        return name.startswith(m.ROUTE_PREFIX)
    prefix = f"{m.ROUTE_PREFIX}{m.label_value(run_id)}:"
    if sandbox is None:
        return name.startswith(prefix)
    return name == prefix + m.label_value(sandbox)


def fork_route(identity: m.ForkIdentity, service: ServiceConfig, baggage_key: str) -> Manifest:
    """The route sending requests that carry this sandbox's routing key to the fork: in the
    baggage header (`<baggage_key>=<key>`) or in tracestate (`harness=<key>`). Two match blocks
    are ORed, so either header is enough: a hop that keeps only one still reaches the fork."""
    k8s = service.kubernetes
    assert k8s is not None
    key = identity.routing_key
    host = m.service_host(m.fork_name(identity, service), k8s.namespace)
    return {
        "name": identity.route_name,
        "match": [
            {"headers": {"baggage": {"regex": member_regex(baggage_key, key)}}},
            {"headers": {"tracestate": {"regex": member_regex(TRACESTATE_KEY, key)}}},
        ],
        "route": [{"destination": {"host": host, "port": {"number": k8s.port}}}],
    }


def default_route(service: ServiceConfig) -> Manifest:
    k8s = service.kubernetes
    assert k8s is not None
    destination = {"host": m.service_host(k8s.service, k8s.namespace), "port": {"number": k8s.port}}
    return {"name": "baseline", "route": [{"destination": destination}]}


def route_table(identity: m.ForkIdentity, service: ServiceConfig, route: Manifest) -> Manifest:
    """A VirtualService for a baseline Service that had none: our route, then the default route
    to the baseline. Shared by every sandbox of that service (each adds its owner reference), so
    the garbage collector removes it only once the last of them is gone."""
    k8s = service.kubernetes
    assert k8s is not None
    name = f"{k8s.service[:50]}-harness"
    return {
        "apiVersion": f"{m.ISTIO_GROUP}/{m.ISTIO_VERSION}",
        "kind": "VirtualService",
        "metadata": m.object_metadata(identity, name, k8s.namespace, "route-table"),
        "spec": {
            "hosts": [m.service_host(k8s.service, k8s.namespace)],
            "http": [route, default_route(service)],
        },
    }


def routes_service(virtual_service: Manifest, service: ServiceConfig) -> bool:
    """Whether a VirtualService applies to sidecar (mesh) traffic for the baseline Service."""
    k8s = service.kubernetes
    assert k8s is not None
    names = {k8s.service, f"{k8s.service}.{k8s.namespace}", f"{k8s.service}.{k8s.namespace}.svc"}
    names.add(m.service_host(k8s.service, k8s.namespace))
    spec = virtual_service.get("spec", {})
    gateways = spec.get("gateways") or ["mesh"]
    return "mesh" in gateways and bool(names & set(spec.get("hosts", [])))


def _is_route_table(virtual_service: Manifest) -> bool:
    """Created by harness (and so deleted by it once no sandbox routes through it)."""
    labels = virtual_service.get("metadata", {}).get("labels", {})
    return bool(labels.get(m.LABEL_ROLE) == "route-table")


def _current(api: ClusterApi, service: ServiceConfig) -> Manifest | None:
    k8s = service.kubernetes
    assert k8s is not None
    if k8s.virtual_service is not None:
        return api.get(VIRTUAL_SERVICE, k8s.namespace, k8s.virtual_service)
    listed = api.list_objects(VIRTUAL_SERVICE, k8s.namespace)
    candidates = [vs for vs in listed if routes_service(vs, service)]
    return candidates[0] if candidates else None


def install_route(
    api: ClusterApi,
    service: ServiceConfig,
    identity: m.ForkIdentity,
    route: Manifest,
    owner: Manifest,
) -> str:
    """Put `route` first in the VirtualService of `service`'s host, creating one (owned by the
    sandbox's owner) if there is none. Returns the VirtualService's name. Idempotent."""
    k8s = service.kubernetes
    assert k8s is not None
    for _ in range(ATTEMPTS):
        current = _current(api, service)
        if current is None:
            table = route_table(identity, service, route)
            table["metadata"]["ownerReferences"] = [owner]
            try:
                api.create(table)
            except ApiException as exc:
                if exc.status == 409:  # another sandbox created it first: patch theirs
                    continue
                raise
            return str(table["metadata"]["name"])
        name = current["metadata"]["name"]
        if any(r.get("name") == route["name"] for r in current["spec"].get("http", [])):
            return str(name)
        ops: list[Manifest] = [{"op": "add", "path": "/spec/http/0", "value": route}]
        if _is_route_table(current):
            # A shared route table lives until its last sandbox's owner is gone.
            ops.append({"op": "add", "path": "/metadata/ownerReferences/-", "value": owner})
        try:
            api.json_patch(VIRTUAL_SERVICE, k8s.namespace, name, ops)
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # deleted or changed under us: read again
                continue
            raise
        return str(name)
    raise InfrastructureError(
        f"VirtualService for {k8s.namespace}/{k8s.service}: kept changing; route not installed"
    )


def remove_routes(
    api: ClusterApi, namespace: str, run_id: str | None, sandbox: str | None, dry_run: bool
) -> list[str]:
    """Remove harness's routes in that scope from every VirtualService in `namespace`, and
    delete route tables harness created that no sandbox routes through any more."""
    try:
        virtual_services = api.list_objects(VIRTUAL_SERVICE, namespace)
    except ApiException as exc:
        if exc.status == 404:  # no Istio in this cluster: nothing can have been routed
            return []
        raise
    done: list[str] = []
    for virtual_service in virtual_services:
        done += _clean(api, virtual_service, run_id, sandbox, dry_run)
    return done


def _clean(
    api: ClusterApi,
    virtual_service: Manifest | None,
    run_id: str | None,
    sandbox: str | None,
    dry_run: bool,
) -> list[str]:
    done: list[str] = []
    for _ in range(ATTEMPTS):
        if virtual_service is None:  # deleted meanwhile: nothing left to clean
            return done
        metadata = virtual_service["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        where = f"VirtualService {namespace}/{name}"
        names = [route.get("name", "") for route in virtual_service["spec"].get("http", [])]
        ours = [i for i, route in enumerate(names) if route_matches(route, run_id, sandbox)]
        try:
            if ours:
                verb = "would remove" if dry_run else "removed"
                lines = [f"{verb} route {names[i]} from {where}" for i in ours]
                if dry_run:
                    return done + lines
                ops: list[Manifest] = []
                for index in reversed(ours):  # from the end: earlier indices stay valid
                    path = f"/spec/http/{index}"
                    ops += [
                        {"op": "test", "path": f"{path}/name", "value": names[index]},
                        {"op": "remove", "path": path},
                    ]
                virtual_service = api.json_patch(VIRTUAL_SERVICE, namespace, name, ops)
                done += lines
                continue  # now maybe an empty route table, to delete
            if _is_route_table(virtual_service) and not any(route_matches(n) for n in names):
                # Only the default route is left: the same as no VirtualService at all. The
                # precondition keeps a route another sandbox adds meanwhile.
                version = metadata["resourceVersion"]
                if dry_run or api.delete(VIRTUAL_SERVICE, namespace, name, version):
                    done.append(f"{'would delete' if dry_run else 'deleted'} {where}")
            return done
        except ApiException as exc:
            if exc.status not in (409, 422):  # changed since read (test op, precondition)
                raise
            virtual_service = api.get(VIRTUAL_SERVICE, namespace, name)
    raise InfrastructureError("a VirtualService kept changing while harness removed its routes")
