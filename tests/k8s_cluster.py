"""A shop's baseline as a cluster would hold it, and the policy pieces the Kubernetes backend's
tests share (plain builders; each test module keeps its own fixtures)."""

from __future__ import annotations

import copy
from typing import Any

from k8s_emulator import KubeEmulator

from harness.integration.config import IntegrationConfig, ServiceMap

NAMESPACE = "shop-staging"
CONTEXT = "harness-test"
PRODUCTION = "production"
TEST_IMAGE = "registry.example/shop-tests:{commit}"

Obj = dict[str, Any]


def baseline_deployment(name: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": name, "team": "shop"},
            "annotations": {"deployment.kubernetes.io/revision": "7", "owner": "shop-team"},
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": name, "version": "v1"}},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": f"registry.example/{name}:1.0",
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "env": [
                                {"name": "PORT", "value": "8080"},
                                {"name": "HARNESS_ROUTING_KEY", "value": "stale"},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                        },
                        {"name": "metrics", "image": "registry.example/metrics:2"},
                    ]
                },
            },
        },
    }


def baseline_service(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.17",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def users_virtual_service(name: str) -> Obj:
    """A VirtualService the shop's team owns: a canary route on a header, then the default."""
    host = f"{name}.{NAMESPACE}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"{name}-routes", "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "canary",
                    "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                    "route": [{"destination": {"host": host, "subset": "v2"}}],
                },
                {"name": "default", "route": [{"destination": {"host": host, "subset": "v1"}}]},
            ],
        },
    }


def seed_shop(emulator: KubeEmulator, virtual_service: bool) -> None:
    for name in ("front", "cart", "pricing"):
        emulator.seed(baseline_deployment(name))
        emulator.seed(baseline_service(name))
    if virtual_service:
        emulator.seed(users_virtual_service("cart"))


def service_map(tests: bool = True) -> ServiceMap:
    services = []
    for name in ("front", "cart", "pricing"):
        kubernetes: Obj = {"namespace": NAMESPACE, "deployment": name, "service": name}
        if name == "cart":
            kubernetes["image"] = "registry.example/cart:{commit}"
            kubernetes["container"] = "cart"
        services.append(
            {
                "name": name,
                "paths": [f"{name}/**"],
                "command": f"python -m {name}",
                "kubernetes": kubernetes,
            }
        )
    raw = {"services": services, "tests": ["pytest -q tests/integration"] if tests else []}
    return ServiceMap.model_validate(raw)


def integration(**backend: Any) -> IntegrationConfig:
    settings = {
        "contexts": [CONTEXT],
        "namespaces": [NAMESPACE],
        "test_image": TEST_IMAGE,
        "rollout_timeout_s": 5.0,
        **backend,
    }
    return IntegrationConfig.model_validate({"backend": "kubernetes", "kubernetes": settings})


def selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def spec_of(obj: Obj) -> Obj:
    """An object's spec without server bookkeeping, for before/after comparisons."""
    return copy.deepcopy(obj["spec"])
