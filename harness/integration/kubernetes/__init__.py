"""The Kubernetes backend of integration gates: an optional extra (`pip install
'harness[kubernetes]'`). This package's own init imports nothing of the client, so that
`require_kubernetes` can say which extra is missing before any of its modules is loaded."""

from __future__ import annotations

from harness.errors import InputError

KUBERNETES_EXTRA = (
    "integration.backend: kubernetes needs the optional extra: pip install 'harness[kubernetes]'"
)


def require_kubernetes() -> None:
    """Import the Kubernetes client, or raise an InputError naming the optional extra that
    installs it: a policy asking for the Kubernetes backend fails before anything is made, in
    one line, rather than with a traceback from deep inside a gate."""
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        if exc.name != "kubernetes":  # installed, but broken: that traceback is the news
            raise
        raise InputError(KUBERNETES_EXTRA) from None
