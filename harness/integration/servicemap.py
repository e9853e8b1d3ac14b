"""Which service map applies to a spec: the policy's inline one, or the repository's own file.

A `services_file` is read at the spec's base commit, the tree the baseline runs, so the map and
the baseline always agree (and an agent editing the file cannot change how its own work is
tested). A repository without the file has no service map: its integration gates do not apply.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from harness.config.spec import Spec
from harness.config.strict import parse_yaml_mapping
from harness.git import GitRepository
from harness.integration.config import IntegrationConfig, ServiceMap


def load_service_map(spec: Spec, config: IntegrationConfig) -> ServiceMap | None:
    """The spec's service map, or None when its repository has none."""
    if config.services is not None:
        return config.services
    if config.services_file is None:
        return None
    relpath = PurePosixPath(spec.subdir.as_posix(), config.services_file)
    where = f"{spec.repo_dir}/{config.services_file} (at base {spec.base_commit[:12]})"
    text = GitRepository(Path(spec.git_toplevel)).read_file(spec.base_commit, str(relpath))
    if text is None:
        return None
    return parse_yaml_mapping(text, where, ServiceMap, "with `services:` (a service map)")
