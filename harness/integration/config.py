"""The service map: which services a repository has, where their sources are, how each runs
locally and on Kubernetes. Users write it (in the policy, or a file the policy names)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from harness.config.strict import StrictModel

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS label: usable as a Kubernetes name


class KubernetesService(StrictModel):
    """Where a service's baseline lives in the cluster; the sandbox forks its Deployment."""

    namespace: str = Field(pattern=NAME_PATTERN)
    deployment: str = Field(pattern=NAME_PATTERN)
    """The baseline Deployment, copied (same spec) for the sandbox with image or env overridden."""
    service: str = Field(pattern=NAME_PATTERN)
    """The baseline Service; its VirtualService gets the sandbox's header route."""
    port: int = Field(default=80, ge=1, le=65535)
    container: str | None = None
    """The container whose image/env is overridden; default: the first."""
    image: str | None = None
    """The image the fork runs, e.g. `registry.example.com/cart:{commit}` ({commit}: the task's
    commit, {sandbox}: the task); default: the baseline's image, with only the env overridden."""
    virtual_service: str | None = Field(default=None, pattern=NAME_PATTERN)
    """The VirtualService routing to `service` (patched with a prepended route); default: the one
    in `namespace` whose hosts name the Service, or a new one harness creates and removes."""


class ServiceConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    paths: list[str] = Field(min_length=1)
    """Git globs relative to the spec's repo: a diff touching one changes this service."""
    command: str = Field(min_length=1)
    """How to run it locally (shell, from the repo directory); it listens on $<port_env>."""
    port_env: str = Field(default="PORT", pattern=r"^[A-Z_][A-Z0-9_]*$")
    health: str = Field(default="/health", pattern=r"^/")
    """HTTP path that answers 2xx once the service is ready."""
    calls: dict[str, str] = {}
    """Environment variable -> service name: the base URL it uses to call that service (set
    to the routing layer in front of it, so calls carrying a routing key reach a sandbox)."""
    kubernetes: KubernetesService | None = None


class ServiceMap(StrictModel):
    services: list[ServiceConfig] = Field(min_length=1)
    tests: list[str] = []
    """Integration test commands for this repository; they get $HARNESS_ROUTING_KEY,
    $HARNESS_BAGGAGE and $HARNESS_URL_<SERVICE> (the routing layer's address)."""

    @model_validator(mode="after")
    def _names_are_known(self) -> Self:
        names = [service.name for service in self.services]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"service names must be unique, repeated: {', '.join(repeated)}")
        for service in self.services:
            unknown = sorted(set(service.calls.values()) - set(names))
            if unknown:
                raise ValueError(
                    f"service {service.name!r} calls {', '.join(unknown)}, which the map does "
                    f"not define (services: {', '.join(names)})"
                )
        return self

    def get(self, name: str) -> ServiceConfig:
        return next(service for service in self.services if service.name == name)


class KubernetesBackend(StrictModel):
    """Where the Kubernetes backend may act. Anything outside these lists is refused: an
    ephemeral worker never touches a production namespace."""

    contexts: list[str] = []
    """Kube contexts harness may use (empty: none, so the backend refuses to run)."""
    namespaces: list[str] = []
    """Namespaces harness may create objects in or patch (empty: none)."""
    context: str | None = None
    """The kube context to use (from $KUBECONFIG or ~/.kube/config); it must be in `contexts`.
    Default: the kubeconfig's current context, which must be in `contexts` too."""
    test_image: str | None = None
    """The image integration test Jobs run the service map's `tests` in ({commit}, {sandbox}
    filled in as for `image`); required to run them on Kubernetes."""
    rollout_timeout_s: float = Field(default=120, gt=0)
    job_deadline_s: int = Field(default=900, ge=1)
    """activeDeadlineSeconds of an integration test Job."""
    job_ttl_s: int = Field(default=3600, ge=0)
    """ttlSecondsAfterFinished of an integration test Job."""


class IntegrationConfig(StrictModel):
    """Integration gates: changed services sandboxed over a shared baseline, reached through a
    routing key carried as W3C baggage."""

    backend: str = Field(default="local", pattern=r"^(local|kubernetes)$")
    services: ServiceMap | None = None
    """The service map inline; or name a file with `services_file`."""
    services_file: str | None = None
    """A service map YAML, relative to the spec's repo (so each repository carries its own)."""
    baggage_key: str = Field(default="harness-routing-key", pattern=r"^[A-Za-z0-9_.-]+$")
    """The W3C baggage member that carries the routing key."""
    ready_timeout_s: float = Field(default=30, gt=0)
    """How long a sandboxed service may take to answer its health check."""
    kubernetes: KubernetesBackend = KubernetesBackend()

    @model_validator(mode="after")
    def _one_service_map(self) -> Self:
        if self.services is not None and self.services_file is not None:
            raise ValueError("give the service map inline (`services`) or services_file, not both")
        return self
