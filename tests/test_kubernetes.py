"""The Kubernetes backend against a Kubernetes API emulator on 127.0.0.1 (tests/k8s_emulator.py,
driven by the official client through a kubeconfig): forks, Services, VirtualService routes,
Jobs, labels, owner references, teardown, reaping, the allowlist and readiness failures.

No real cluster runs here (no container engine): what the emulator does not check is listed in
its docstring and in the README."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_cluster import (
    CONTEXT,
    NAMESPACE,
    PRODUCTION,
    integration,
    seed_shop,
    selector_text,
    service_map,
    spec_of,
)
from k8s_controllers import fails_with, jobs_finish, rolls_out
from k8s_emulator import KubeEmulator
from k8s_patch import matches

from harness.errors import InputError
from harness.integration.config import IntegrationConfig
from harness.integration.kubernetes import manifests as m
from harness.integration.kubernetes.fork import KubernetesFork, open_fork, reap
from harness.integration.kubernetes.readiness import LOG_LINES
from harness.integration.kubernetes.routes import member_regex
from harness.integration.routing_key import key_from_headers, routing_headers, routing_key

COMMIT = "0123456789abcdef0123456789abcdef01234567"
POLL_S = 0.01


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    server = KubeEmulator().start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, emulator: KubeEmulator) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig", (CONTEXT, PRODUCTION), CONTEXT)


def identity(run_id: str = "r1", spec_id: str = "fix-cart") -> m.ForkIdentity:
    return m.ForkIdentity(run_id, spec_id, routing_key(run_id, spec_id))


def open_cart(
    kubeconfig: Path,
    who: m.ForkIdentity | None = None,
    config: IntegrationConfig | None = None,
    changed: tuple[str, ...] = ("cart",),
) -> KubernetesFork:
    return open_fork(
        config or integration(),
        service_map(),
        list(changed),
        who or identity(),
        COMMIT,
        "policy.yaml",
        kubeconfig,
    )


def owner_uid(emulator: KubeEmulator, who: m.ForkIdentity) -> str:
    owner = emulator.get("ConfigMap", NAMESPACE, who.owner_name)
    assert owner is not None
    return str(owner["metadata"]["uid"])


# --- what apply creates -----------------------------------------------------------------------


def test_fork_copies_the_baseline_with_overrides_labels_and_owner(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    emulator.on_create["Deployment"] = rolls_out
    baseline = emulator.get("Deployment", NAMESPACE, "cart")
    assert baseline is not None
    who = identity()
    sandbox = open_cart(kubeconfig, who)

    uid = owner_uid(emulator, who)
    owner = emulator.get("ConfigMap", NAMESPACE, who.owner_name)
    assert owner is not None and owner["data"]["routing-key"] == who.routing_key
    fork_name = m.fork_name(who, service_map().get("cart"))
    fork = emulator.get("Deployment", NAMESPACE, fork_name)
    assert fork is not None
    labels = fork["metadata"]["labels"]
    assert labels[m.LABEL_RUN] == "r1" and labels[m.LABEL_SANDBOX] == "fix-cart"
    assert labels[m.LABEL_ROUTING_KEY] == who.routing_key
    assert [ref["uid"] for ref in fork["metadata"]["ownerReferences"]] == [uid]
    assert fork["metadata"]["annotations"] == {"owner": "shop-team"}  # server's revision dropped

    # Same spec, except: one replica, our selector, the image and env of the named container.
    spec, base = fork["spec"], baseline["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == base["strategy"]
    cart, metrics = spec["template"]["spec"]["containers"]
    assert cart["image"] == f"registry.example/cart:{COMMIT}"
    assert metrics == base["template"]["spec"]["containers"][1]
    env = {item["name"]: item["value"] for item in cart["env"]}
    assert env["PORT"] == "8080" and env["HARNESS_ROUTING_KEY"] == who.routing_key
    assert [item["name"] for item in cart["env"]].count("HARNESS_ROUTING_KEY") == 1
    assert cart["readinessProbe"] == base["template"]["spec"]["containers"][0]["readinessProbe"]

    # Neither the baseline's Service nor its Deployment selects the fork's pods; the fork's do.
    pod_labels = spec["template"]["metadata"]["labels"]
    assert not matches("app=cart", pod_labels)
    assert matches(selector_text(spec["selector"]["matchLabels"]), pod_labels)
    fork_service = emulator.get("Service", NAMESPACE, fork_name)
    assert fork_service is not None
    assert matches(selector_text(fork_service["spec"]["selector"]), pod_labels)
    assert fork_service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert "clusterIP" not in fork_service["spec"]
    assert [ref["uid"] for ref in fork_service["metadata"]["ownerReferences"]] == [uid]

    # The baseline is only read.
    assert emulator.get("Deployment", NAMESPACE, "cart") == baseline
    assert sandbox.wait_ready(timeout_s=5, poll_s=POLL_S) == []


def test_teardown_cascades_from_the_owner_and_is_idempotent(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    before = {kind: emulator.all(kind) for kind in ("Deployment", "Service", "VirtualService")}
    sandbox = open_cart(kubeconfig, changed=("cart", "pricing"))
    assert len(emulator.all("Deployment")) == 5 and len(emulator.all("VirtualService")) == 2

    # Deleting the owner alone removes every object: each names it in ownerReferences.
    sandbox.api.delete("ConfigMap", NAMESPACE, sandbox.plan.identity.owner_name)
    assert {kind: emulator.all(kind) for kind in before} == before

    assert sandbox.teardown() == []  # nothing left, and no error


def test_route_is_prepended_to_an_existing_virtual_service_and_removed_on_teardown(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=True)
    original = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert original is not None
    who = identity()
    sandbox = open_cart(kubeconfig, who)

    patched = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert patched is not None
    routes = patched["spec"]["http"]
    assert [r["name"] for r in routes] == [who.route_name, "canary", "default"]
    assert routes[1:] == original["spec"]["http"]  # the team's routes, untouched, in order
    fork_host = f"{m.fork_name(who, service_map().get('cart'))}.{NAMESPACE}.svc.cluster.local"
    assert routes[0]["route"] == [{"destination": {"host": fork_host, "port": {"number": 80}}}]
    headers = [next(iter(match["headers"])) for match in routes[0]["match"]]
    assert headers == ["baggage", "tracestate"]
    # Patched with a JSON patch, never replaced; the team's object gets no owner reference.
    vs_writes = [w for w in emulator.writes() if "/virtualservices" in w[1]]
    assert [(w[0], w[2]) for w in vs_writes] == [("PATCH", "application/json-patch+json")]
    assert "ownerReferences" not in patched["metadata"]
    owner = emulator.get("ConfigMap", NAMESPACE, who.owner_name)
    assert (
        owner is not None
        and original["spec"]["http"][0]["name"] in owner["data"]["virtualservices.json"]
    )

    # Someone adds a route meanwhile: teardown removes exactly ours and keeps theirs.
    added = {"name": "added-later", "route": routes[2]["route"]}
    sandbox.api.json_patch(
        "VirtualService",
        NAMESPACE,
        "cart-routes",
        [{"op": "add", "path": "/spec/http/1", "value": added}],
    )
    removed = sandbox.teardown()
    assert f"removed route {who.route_name} from VirtualService {NAMESPACE}/cart-routes" in removed
    after = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert after is not None
    assert [r["name"] for r in after["spec"]["http"]] == ["added-later", "canary", "default"]

    # Without the later change, the VirtualService reads exactly as before the sandbox.
    sandbox.api.json_patch(
        "VirtualService", NAMESPACE, "cart-routes", [{"op": "remove", "path": "/spec/http/0"}]
    )
    restored = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert restored is not None and spec_of(restored) == spec_of(original)
    assert restored["metadata"]["labels"] == original["metadata"]["labels"]


def test_a_created_route_table_is_shared_and_goes_with_its_last_sandbox(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    first, second = identity("r1", "fix-cart"), identity("r1", "cart-tax")
    one = open_cart(kubeconfig, first)
    table = emulator.get("VirtualService", NAMESPACE, "cart-harness")
    assert table is not None
    assert [r["name"] for r in table["spec"]["http"]] == [first.route_name, "baseline"]
    default = table["spec"]["http"][-1]["route"][0]["destination"]
    assert default == {"host": f"cart.{NAMESPACE}.svc.cluster.local", "port": {"number": 80}}

    two = open_cart(kubeconfig, second)
    table = emulator.get("VirtualService", NAMESPACE, "cart-harness")
    assert table is not None
    names = [r["name"] for r in table["spec"]["http"]]
    assert names == [second.route_name, first.route_name, "baseline"]
    owners = {ref["uid"] for ref in table["metadata"]["ownerReferences"]}
    assert owners == {owner_uid(emulator, first), owner_uid(emulator, second)}

    one.teardown()
    table = emulator.get("VirtualService", NAMESPACE, "cart-harness")
    assert table is not None
    assert [r["name"] for r in table["spec"]["http"]] == [second.route_name, "baseline"]
    assert emulator.get("Deployment", NAMESPACE, m.fork_name(second, service_map().get("cart")))

    two.teardown()
    assert emulator.get("VirtualService", NAMESPACE, "cart-harness") is None
    assert sorted(d["metadata"]["name"] for d in emulator.all("Deployment")) == [
        "cart",
        "front",
        "pricing",
    ]


# --- the routing rule -------------------------------------------------------------------------


def test_route_regexes_match_real_baggage_and_tracestate_headers() -> None:
    """Envoy matches the whole header value against an RE2 regex: re.fullmatch is that. The
    headers are OpenTelemetry's own (the W3C propagators), plus lists other services wrote."""
    key = routing_key("r1", "fix-cart")
    baggage_re = member_regex("harness-routing-key", key)
    tracestate_re = member_regex("harness", key)
    for syntax in (r"(?", r"\1", r"\b", r"\p"):  # lookarounds, backreferences: not RE2
        assert syntax not in baggage_re
    headers = routing_headers("harness-routing-key", key)
    assert re.fullmatch(baggage_re, headers["baggage"])
    assert re.fullmatch(tracestate_re, headers["tracestate"])

    def carries(regex: str, value: str) -> bool:
        return re.fullmatch(regex, value) is not None

    other = routing_key("r1", "other-task")
    assert carries(baggage_re, f"userId=alice, harness-routing-key={key};ttl=5, isProd=false")
    assert carries(baggage_re, f"harness-routing-key = {key} ,session=1")
    assert carries(tracestate_re, f"rojo=00f067aa0ba902b7,harness={key},congo=t61rcWkgMzE")
    assert not carries(baggage_re, f"harness-routing-key={other}")
    assert not carries(baggage_re, f"harness-routing-key={key}0")  # a longer key
    assert not carries(baggage_re, f"harness-routing-key={key[:-1]}")  # a prefix of it
    assert not carries(baggage_re, f"x-harness-routing-key={key}")  # another member's name
    assert not carries(baggage_re, f"userId={key}")
    assert not carries(baggage_re, "")
    assert not carries(tracestate_re, routing_headers("harness-routing-key", other)["tracestate"])


# --- the allowlist ----------------------------------------------------------------------------


def test_a_namespace_outside_the_allowlist_is_refused_before_any_request(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    config = integration(namespaces=["sandboxes"])
    with pytest.raises(InputError, match=r"namespace 'shop-staging' is not in .*allowlist"):
        open_cart(kubeconfig, config=config)
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("settings", "refused"),
    [({"context": PRODUCTION}, PRODUCTION), ({"contexts": ["staging"]}, CONTEXT)],
)
def test_a_context_outside_the_allowlist_is_refused_before_any_request(
    emulator: KubeEmulator, kubeconfig: Path, settings: dict[str, object], refused: str
) -> None:
    with pytest.raises(InputError, match=rf"kube context '{refused}' is not in .*contexts"):
        open_cart(kubeconfig, config=integration(**settings))
    with pytest.raises(InputError, match="is not in"):
        reap(integration(**settings), kubeconfig=kubeconfig)
    assert emulator.requests == []


# --- reaping (harness gc) ---------------------------------------------------------------------


def test_reap_removes_a_runs_objects_by_label_and_nothing_else(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=True)
    emulator.seed(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shop-settings", "namespace": NAMESPACE, "labels": {"app": "x"}},
            "data": {"a": "b"},
        }
    )
    baseline = {kind: emulator.all(kind) for kind in ("Deployment", "Service", "ConfigMap")}
    original = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    open_cart(kubeconfig, identity("r1", "fix-cart"), changed=("cart", "front"))
    open_cart(kubeconfig, identity("r1", "cart-tax"))
    kept = identity("r2", "fix-cart")
    open_cart(kubeconfig, kept)
    config = integration()

    preview = reap(config, "r1", dry_run=True, kubeconfig=kubeconfig)
    assert len(emulator.all("Deployment")) == 3 + 4  # a dry run deletes nothing
    assert sum(line.startswith("would delete Deployment") for line in preview) == 3

    one = reap(config, "r1", sandbox="cart-tax", kubeconfig=kubeconfig)  # one task only
    assert one == [
        f"removed route harness:r1:cart-tax from VirtualService {NAMESPACE}/cart-routes",
        f"deleted ConfigMap {NAMESPACE}/{identity('r1', 'cart-tax').owner_name}",
    ]
    done = reap(config, "r1", kubeconfig=kubeconfig)
    assert sum(line.startswith("removed route") for line in done) == 2  # cart and front
    assert f"deleted VirtualService {NAMESPACE}/front-harness" in done  # no sandbox left in it
    assert sum(line.startswith("deleted ConfigMap") for line in done) == 1
    remaining = [d["metadata"]["name"] for d in emulator.all("Deployment")]
    assert sorted(remaining) == sorted(
        ["cart", "front", "pricing", m.fork_name(kept, service_map().get("cart"))]
    )
    vs = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert vs is not None and [r["name"] for r in vs["spec"]["http"]] == [
        kept.route_name,
        "canary",
        "default",
    ]
    assert reap(config, "r1", kubeconfig=kubeconfig) == []  # idempotent

    reap(config, kubeconfig=kubeconfig)  # every run
    assert {kind: emulator.all(kind) for kind in baseline} == baseline
    restored = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert original is not None and restored is not None
    assert spec_of(restored) == spec_of(original)
    assert reap(config, kubeconfig=kubeconfig) == []
    # Reaping reads labels: it never listed without a selector except VirtualServices.
    lists = [r[1] for r in emulator.requests if r[0] == "GET" and "?" in r[1]]
    assert all("labelSelector" in path for path in lists if "/virtualservices" not in path)


def test_reap_without_an_allowlist_does_nothing(emulator: KubeEmulator) -> None:
    assert reap(IntegrationConfig()) == []
    assert emulator.requests == []


# --- readiness --------------------------------------------------------------------------------


def test_image_pull_backoff_is_an_infrastructure_problem(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    message = 'Back-off pulling image "registry.example/cart:0123456"'
    emulator.on_create["Deployment"] = fails_with("ImagePullBackOff", message, logs=None)
    [problem] = open_cart(kubeconfig).wait_ready(timeout_s=5, poll_s=POLL_S)
    assert problem.category == "infrastructure" and problem.code == "ImagePullBackOff"
    assert message in problem.detail
    assert "it has not run" in problem.detail  # no container ever started: no log to show


def test_crash_loop_carries_the_crashed_containers_last_log_lines(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    log = "".join(f"line {n}\n" for n in range(100)) + "KeyError: 'CART_DB_URL'\n"
    emulator.on_create["Deployment"] = fails_with("CrashLoopBackOff", "back-off 40s", log)
    [problem] = open_cart(kubeconfig).wait_ready(timeout_s=5, poll_s=POLL_S)
    assert problem.category == "infrastructure" and problem.code == "CrashLoopBackOff"
    assert "KeyError: 'CART_DB_URL'" in problem.detail
    assert "previous instance" in problem.detail
    assert "line 99" in problem.detail and "line 10\n" not in problem.detail
    assert problem.detail.count("\nline ") == LOG_LINES - 1


def test_a_rollout_that_never_completes_times_out(emulator: KubeEmulator, kubeconfig: Path) -> None:
    seed_shop(emulator, virtual_service=False)  # no controller: the fork never rolls out
    [problem] = open_cart(kubeconfig).wait_ready(timeout_s=0.2, poll_s=POLL_S)
    assert problem.category == "infrastructure" and problem.code == "RolloutTimeout"
    assert problem.retryable and "not rolled out after 0.2s" in problem.detail
    assert "(no pods were created)" in problem.detail


# --- integration test Jobs --------------------------------------------------------------------


def test_test_jobs_carry_deadline_ttl_baggage_and_report_failures(
    emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_shop(emulator, virtual_service=False)
    emulator.on_create["Deployment"] = rolls_out
    outcomes = iter(
        [
            ("Complete", "", 0, "3 passed\n"),
            ("Failed", "BackoffLimitExceeded", 1, "FAILED tests/integration/test_cart.py\n"),
            ("Failed", "DeadlineExceeded", 137, "running...\n"),
        ]
    )
    emulator.on_create["Job"] = jobs_finish(lambda command: next(outcomes))
    who = identity()
    config = integration(job_deadline_s=600, job_ttl_s=120)
    sandbox = open_cart(kubeconfig, who, config=config)

    command = "pytest -q tests/integration"
    passed = sandbox.run_test(command, poll_s=POLL_S)
    assert passed.passed and passed.exit_code == 0 and passed.log == "3 passed\n"
    [job] = emulator.all("Job")
    assert (
        job["spec"]["activeDeadlineSeconds"] == 600
        and job["spec"]["ttlSecondsAfterFinished"] == 120
    )
    assert job["spec"]["backoffLimit"] == 0
    assert [ref["uid"] for ref in job["metadata"]["ownerReferences"]] == [owner_uid(emulator, who)]
    assert job["metadata"]["labels"][m.LABEL_ROUTING_KEY] == who.routing_key
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["HARNESS_BAGGAGE"] == f"harness-routing-key={who.routing_key}"
    assert env["HARNESS_URL_CART"] == f"http://cart.{NAMESPACE}.svc.cluster.local:80"
    assert env["HARNESS_SANDBOXED"] == "cart"
    # Requests sent with these headers are the ones the sandbox's route matches.
    [vs] = emulator.all("VirtualService")
    baggage_match, tracestate_match = vs["spec"]["http"][0]["match"]
    assert re.fullmatch(baggage_match["headers"]["baggage"]["regex"], env["HARNESS_BAGGAGE"])
    tracestate = tracestate_match["headers"]["tracestate"]["regex"]
    assert re.fullmatch(tracestate, env["HARNESS_TRACESTATE"])
    headers = {"traceparent": env["HARNESS_TRACEPARENT"], "tracestate": env["HARNESS_TRACESTATE"]}
    assert key_from_headers(headers, "harness-routing-key") == who.routing_key
    assert container["image"] == f"registry.example/shop-tests:{COMMIT}"

    failed = sandbox.run_test(command, poll_s=POLL_S)  # a second run gets a fresh Job
    assert not failed.passed and failed.tests_failed and failed.exit_code == 1
    assert "FAILED tests/integration/test_cart.py" in (failed.log or "")
    assert failed.command == command and failed.name != passed.name
    late = sandbox.run_test(command, poll_s=POLL_S)
    assert not late.passed and not late.tests_failed and late.reason == "DeadlineExceeded"
    assert len(emulator.all("Job")) == 3

    sandbox.teardown()
    assert emulator.all("Job") == [] and emulator.all("Pod") == []
