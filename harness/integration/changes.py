"""The changed services of a task: those whose `paths` its diff against the base touches.

Only these are sandboxed; every other service is reached at the shared baseline.
"""

from __future__ import annotations

from harness.git import Worktree
from harness.integration.config import ServiceConfig, ServiceMap


def changed_services(services: ServiceMap, worktree: Worktree, base: str) -> list[ServiceConfig]:
    """Services with a committed change since `base`, in the map's order.

    Matched by git itself (`:(glob)` pathspecs relative to the spec's repo directory), so the
    globs mean exactly what they mean to `git diff`.
    """
    return [service for service in services.services if worktree.changed_files(base, service.paths)]
