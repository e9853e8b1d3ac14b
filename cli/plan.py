"""`harness sandbox …`: integration sandboxes, for review. `plan` prints the manifests the
Kubernetes backend would apply for a spec, and writes nothing."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import PolicyOption, resolve_policy
from cli.render import fail

if TYPE_CHECKING:
    from harness.config.spec import Spec
    from harness.integration.config import ServiceMap
    from harness.integration.kubernetes.manifests import Manifest
    from harness.integration.kubernetes.plan import ForkPlan

sandbox_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    rich_markup_mode=None,  # plain help, as the main app's (see cli/main.py)
    pretty_exceptions_enable=False,
)
PLAN_RUN_ID = "plan"
"""The run id a plan is drawn for: names and labels show what a real run's would look like."""


def _overlap(spec_path: str, service_glob: str) -> bool:
    """Whether a path the spec expects to change can touch a service's paths (both globs)."""
    literal = service_glob.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    spec_dir = spec_path.rstrip("/") + "/"
    return (
        fnmatch(spec_path, service_glob)
        or fnmatch(service_glob, spec_path)
        or literal.startswith(spec_dir)
        or spec_path.startswith(literal)
    )


def expected_services(spec: Spec, service_map: ServiceMap) -> list[str]:
    """The services a spec's `paths:` (where its change is expected) touch: a plan is drawn
    before any diff exists."""
    return [
        service.name
        for service in service_map.services
        if any(_overlap(p, g) for p in spec.paths for g in service.paths)
    ]


def _read_documents(path: Path) -> list[Manifest]:
    import yaml

    from harness.errors import InputError

    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read baselines: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not all(isinstance(d, dict) for d in documents if d is not None):
        raise InputError(f"{path}: every YAML document must be a Kubernetes object or a List")
    return [d for d in documents if d is not None]


def _render(plan: ForkPlan) -> str:
    """YAML documents, each under a comment saying what applying it does."""
    import yaml

    identity = plan.identity
    head = (
        f"# sandbox {identity.sandbox} (run {identity.run_id}), routing key "
        f"{identity.routing_key}: {len(plan.manifests())} objects; the owner ConfigMaps come "
        "first and every other object names them, so deleting them removes the rest."
    )
    patched = {id(p.virtual_service): p for p in plan.services if p.patched}
    parts = [head]
    for manifest in plan.manifests():
        metadata = manifest["metadata"]
        where = f"{metadata['namespace']}/{metadata.get('name') or metadata['generateName'] + '…'}"
        if id(manifest) in patched:
            route = patched[id(manifest)].route["name"]
            note = f"# PATCH VirtualService {where}: route {route} prepended (removed at teardown)"
        else:
            note = f"# CREATE {manifest['kind']} {where}"
        parts.append(note + "\n" + yaml.safe_dump(manifest, sort_keys=False).rstrip())
    return "\n---\n".join(parts) + "\n"


@sandbox_app.command(short_help="Print the manifests a Kubernetes sandbox for SPEC would apply.")
def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The spec to plan for.")],
    policy: PolicyOption = None,
    service: Annotated[
        list[str] | None,
        typer.Option(help="A service to sandbox (repeat); default: those the spec's paths touch."),
    ] = None,
    baselines: Annotated[
        Path | None,
        typer.Option(
            help="Baseline objects as YAML (kubectl get … -o yaml) instead of the cluster."
        ),
    ] = None,
) -> None:
    """Print, as YAML, the manifests a Kubernetes sandbox for SPEC would apply. The baselines
    are read from the allowlisted kube context (reads only) or from --baselines FILE."""
    from harness.config.policy import load_policy
    from harness.config.spec import load_spec
    from harness.errors import InfrastructureError, InputError
    from harness.integration.kubernetes import require_kubernetes
    from harness.integration.routing_key import routing_key
    from harness.integration.servicemap import load_service_map

    try:
        # A plan is drawn by the Kubernetes backend: without its optional extra, say which.
        require_kubernetes()
    except InputError as exc:
        raise fail(str(exc)) from None
    from kubernetes.client.exceptions import ApiException

    from harness.integration.kubernetes.api import check_namespaces
    from harness.integration.kubernetes.fork import plan_for
    from harness.integration.kubernetes.manifests import ForkIdentity
    from harness.integration.kubernetes.plan import baselines_from_documents, plan_fork, sandboxed

    try:
        policy = resolve_policy(policy, [spec_path])
        source = str(policy)
        loaded = load_policy(policy)
        spec = load_spec(spec_path)
        integration = loaded.integration
        service_map = load_service_map(spec, integration)
        if service_map is None:
            raise InputError(
                f"{policy}: integration: no service map for {spec.id} (set integration.services, "
                "or integration.services_file and commit that file to the spec's repository)"
            )
        changed = service or expected_services(spec, service_map)
        if not changed:
            raise InputError(
                f"{spec.source}: paths: touch no service of the service map; name the services "
                "to sandbox with --service NAME"
            )
        identity = ForkIdentity(PLAN_RUN_ID, spec.id, routing_key(PLAN_RUN_ID, spec.id))
        if baselines is not None:
            services = sandboxed(service_map, changed, source)
            namespaces = [s.kubernetes.namespace for s in services if s.kubernetes is not None]
            check_namespaces(integration.kubernetes, namespaces, source)
            found = baselines_from_documents(_read_documents(baselines), services, str(baselines))
            drawn = plan_fork(
                identity, integration, service_map, services, found, tests=spec.integration or None
            )
        else:
            _, drawn = plan_for(
                integration,
                service_map,
                changed,
                identity,
                None,
                source,
                tests=spec.integration or None,
            )
    except InputError as exc:
        raise fail(str(exc)) from None
    except ApiException as exc:
        raise fail(f"the kube API server answered {exc.status} {exc.reason}", code=1) from None
    except InfrastructureError as exc:
        raise fail(
            f"cannot read the baselines: {exc}. A plan copies the baseline Deployments and "
            "Services from the cluster; without one, pass --baselines FILE "
            "(kubectl get deployment,service,virtualservice -o yaml)",
            code=1,
        ) from None
    typer.echo(_render(drawn), nl=False)
