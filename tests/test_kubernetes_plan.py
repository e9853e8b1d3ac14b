"""`harness sandbox plan SPEC`: the manifests printed for review, read from a Kubernetes API
emulator on 127.0.0.1 (or a baselines file), and every one of them validated: Deployment,
Service, Job and the owner ConfigMap against Kubernetes' OpenAPI schemas (kubernetes-validate,
strict), the VirtualService (a CRD, absent from those schemas) against Istio's documented
networking/v1 fields, written out below as a JSON schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import CliResult, TinyProject, init_repo, run_cli
from k8s_cluster import CONTEXT, NAMESPACE, PRODUCTION, seed_shop, service_map
from k8s_emulator import KubeEmulator

K8S_VERSION = "1.37.0"

# Istio's VirtualService (networking.istio.io/v1), from its reference documentation: the fields
# harness writes or copies, each object closed so a misspelt or misplaced field fails.
_STRING = {"type": "string"}
_STRING_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,  # oneof exact | prefix | regex
    "properties": {"exact": _STRING, "prefix": _STRING, "regex": _STRING},
}
_MATCH_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": _STRING,
        **{field: _STRING_MATCH for field in ("uri", "scheme", "method", "authority")},
        **{
            field: {"type": "object", "additionalProperties": _STRING_MATCH}
            for field in ("headers", "queryParams", "withoutHeaders")
        },
        "port": {"type": "integer"},
        "sourceLabels": {"type": "object", "additionalProperties": _STRING},
        "gateways": {"type": "array", "items": _STRING},
        "ignoreUriCase": {"type": "boolean"},
        "sourceNamespace": _STRING,
        "statPrefix": _STRING,
    },
}
_DESTINATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {
        "host": _STRING,
        "subset": _STRING,
        "port": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"number": {"type": "integer", "minimum": 0, "maximum": 65535}},
        },
    },
}
_HTTP_ROUTE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": _STRING,
        "match": {"type": "array", "items": _MATCH_REQUEST},
        "route": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["destination"],
                "properties": {
                    "destination": _DESTINATION,
                    "weight": {"type": "integer"},
                    "headers": {"type": "object"},
                },
            },
        },
        **{
            field: {"type": "object"}
            for field in ("redirect", "directResponse", "delegate", "rewrite", "retries", "fault")
        },
        **{field: {"type": "object"} for field in ("mirror", "mirrorPercentage", "corsPolicy")},
        "mirrors": {"type": "array"},
        "timeout": _STRING,
        "headers": {"type": "object"},
    },
}
VIRTUAL_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.istio.io/v1"},
        "kind": {"const": "VirtualService"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["hosts"],
            "properties": {
                "hosts": {"type": "array", "minItems": 1, "items": _STRING},
                "gateways": {"type": "array", "items": _STRING},
                "http": {"type": "array", "items": _HTTP_ROUTE},
                "tls": {"type": "array"},
                "tcp": {"type": "array"},
                "exportTo": {"type": "array", "items": _STRING},
            },
        },
    },
}


def validate(manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "VirtualService":
        jsonschema.validate(manifest, VIRTUAL_SERVICE_SCHEMA)
        for route in manifest["spec"].get("http", []):
            for match in route.get("match", []):
                for value in match.get("headers", {}).values():
                    re.compile(value.get("regex", ""))
    else:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    server = KubeEmulator().start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: KubeEmulator) -> TinyProject:
    """A repo with front/, cart/ and pricing/; spec fix-cart expects to change cart/app.py; the
    policy allowlists the emulator's context and the shop's staging namespace."""
    project = TinyProject(tmp_path)
    for name in ("front", "cart", "pricing"):
        (project.repo / name).mkdir(parents=True)
        (project.repo / name / "app.py").write_text("print('hi')\n", encoding="utf-8")
    init_repo(project.repo)
    project.add_spec("fix-cart", replay=False, paths=["cart/app.py"])
    project.add_spec("docs-only", replay=False, paths=["README.md"])
    integration = {
        "backend": "kubernetes",
        "services": service_map().model_dump(mode="json", exclude_defaults=True),
        "kubernetes": {
            "contexts": [CONTEXT],
            "namespaces": [NAMESPACE],
            "test_image": "registry.example/shop-tests:{commit}",
        },
    }
    project.write_policy(integration=integration)
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", (CONTEXT, PRODUCTION), CONTEXT)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return project


def plan(project: TinyProject, *args: str, spec: str = "fix-cart") -> CliResult:
    policy = str(project.root / "policy.yaml")
    return run_cli(
        ["sandbox", "plan", str(project.specs / f"{spec}.md"), "--policy", policy, *args],
        project.root,
    )


def test_plan_prints_valid_manifests_read_from_the_cluster_without_writing(
    project: TinyProject, emulator: KubeEmulator
) -> None:
    seed_shop(emulator, virtual_service=True)
    result = plan(project)
    assert result.exit_code == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    kinds = [d["kind"] for d in documents]
    assert kinds == ["ConfigMap", "Deployment", "Service", "VirtualService", "Job"]
    for document in documents:
        validate(document)
    assert "# PATCH VirtualService shop-staging/cart-routes: route harness:plan:fix-cart" in (
        result.stdout
    )
    assert result.stdout.count("# CREATE ") == 4
    routes = documents[3]["spec"]["http"]
    assert [r["name"] for r in routes] == ["harness:plan:fix-cart", "canary", "default"]
    deployment = documents[1]
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example/cart:<task commit>"
    )
    assert emulator.writes() == []


def test_plan_from_a_baselines_file_matches_the_plan_from_the_cluster(
    project: TinyProject, emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_shop(emulator, virtual_service=False)
    from_cluster = plan(project)
    assert from_cluster.exit_code == 0, from_cluster.stderr
    # What `kubectl get deployment,service -o yaml` prints: a List, with the server's fields.
    listing = {"apiVersion": "v1", "kind": "List", "items": emulator.all("Deployment")}
    baselines = project.root / "baselines.yaml"
    services = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": emulator.all("Service")}
    )
    baselines.write_text(yaml.safe_dump(listing) + "---\n" + services, encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(project.root / "missing-kubeconfig"))
    offline = plan(project, "--baselines", str(baselines))
    assert offline.exit_code == 0, offline.stderr
    documents = list(yaml.safe_load_all(offline.stdout))
    assert documents == list(yaml.safe_load_all(from_cluster.stdout))
    assert [d["kind"] for d in documents][3] == "VirtualService"  # created: none existed
    for document in documents:
        validate(document)


def test_plan_without_a_reachable_cluster_says_so(
    project: TinyProject, emulator: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.stop()  # the kubeconfig now points at a closed port
    result = plan(project)
    assert result.exit_code == 1
    assert "cannot read the baselines" in result.stderr and "--baselines FILE" in result.stderr
    assert "cannot reach the API server" in result.stderr
    assert result.stdout == ""


def test_plan_refuses_contexts_and_namespaces_outside_the_allowlist(
    project: TinyProject, emulator: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = emulator.write_kubeconfig(tmp_path / "prod", (CONTEXT, PRODUCTION), PRODUCTION)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    result = plan(project)
    assert result.exit_code == 2
    assert "kube context 'production' is not in integration.kubernetes.contexts" in result.stderr
    policy = yaml.safe_load((project.root / "policy.yaml").read_text(encoding="utf-8"))
    policy["integration"]["kubernetes"]["namespaces"] = ["sandboxes"]
    (project.root / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    baselines = project.root / "baselines.yaml"
    baselines.write_text("apiVersion: v1\nkind: List\nitems: []\n", encoding="utf-8")
    result = plan(project, "--baselines", str(baselines))
    assert result.exit_code == 2 and "namespace 'shop-staging' is not in" in result.stderr
    assert emulator.requests == []


def test_plan_needs_services_to_sandbox(project: TinyProject, emulator: KubeEmulator) -> None:
    seed_shop(emulator, virtual_service=False)
    result = plan(project, spec="docs-only")
    assert result.exit_code == 2 and "--service NAME" in result.stderr
    result = plan(project, "--service", "pricing", "--service", "front", spec="docs-only")
    assert result.exit_code == 0, result.stderr
    names = [d["metadata"].get("name") for d in yaml.safe_load_all(result.stdout)]
    assert "pricing-harness" in names and "front-harness" in names
    result = plan(project, "--service", "nope")
    assert result.exit_code == 2 and "no service named 'nope'" in result.stderr


def test_the_schemas_reject_broken_manifests() -> None:
    """The validators above are not vacuous: a misplaced field or a wrong type fails."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "1", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"hosts": ["x"], "http": [{"match": [{"baggage": {"regex": ".*"}}]}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(virtual_service)
    virtual_service["spec"]["http"] = [
        {"match": [{"headers": {"baggage": {"regex": "a", "exact": "b"}}}]}
    ]
    with pytest.raises(jsonschema.ValidationError):
        validate(virtual_service)
