"""Errors the CLI turns into exit codes, so no caller has to guess which are the user's."""


class InputError(Exception):
    """Bad input (a spec, a policy, a flag): one line naming the file, field and fix; exit 2."""


class InfrastructureError(Exception):
    """Something the agent cannot fix failed (a tool missing, git failing); not charged to it."""
