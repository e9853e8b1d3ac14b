"""Whether verification may reuse the last attempt's gate runs instead of running every gate
again: only when they are harness's own records of exactly the tree it would verify.

Verification judges the committed tree. The attempt's gate phase starts from a clean checkout of
the attempt's commit too (harness.run.gate_phase), and every run records the tree hash it
started on. So when the committed tree has not changed since, and every gate of the last attempt
passed on its first run, a verify run would measure the same tree the same way: the evidence is
reused, and the PR record says so. Anything else runs verification as before:

- policy says `verify: {rerun: true}`;
- the committed tree differs from the one the gates ran on, or that run was not on a clean
  checkout (ignored or untracked files could have made it pass);
- any run of the last attempt failed, flaky or infrastructure failures retried into a pass
  included: a tree that failed once gets a second, independent look;
- the gates to run are not those that ran (another policy or spec on a resume);
- an integration gate ran: its verdict also depends on services outside the tree.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from harness.config.policy import GateConfig
from harness.gates.record import GateRecord


class VerifyReuse(BaseModel):
    """Verification that reused an attempt's gate runs: which, on what tree."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    """The attempt whose gate runs were reused."""
    tree: str
    """The committed tree they ran on, a clean checkout of it, and that verification judged."""
    gates: list[str]
    """The gates whose runs were reused, in order."""

    def line(self) -> str:
        """One line for the PR record."""
        return (
            f"verify: reused attempt {self.attempt}'s gate runs on tree {self.tree[:12]} "
            "(a clean checkout of the committed tree; no gate ran again)"
        )


def reusable(
    records: Sequence[GateRecord], *, attempt: int, tree: str, gates: Sequence[GateConfig]
) -> VerifyReuse | str:
    """Attempt `attempt`'s gate runs in `records`, reusable as verification of the committed
    tree `tree` with `gates` to run; else why not, in one line."""
    ran = [record for record in records if record.phase == "attempt" and record.attempt == attempt]
    if not ran:
        return f"no gate ran on attempt {attempt}"
    if failed := next((record for record in ran if not record.passed), None):
        return f"gate {failed.name!r} failed a run on attempt {attempt} ({failed.ending})"
    if stale := next((record for record in ran if record.tree != tree), None):
        return f"attempt {attempt}'s gates ran on tree {stale.tree}, the committed tree is {tree}"
    if any(not record.clean_checkout for record in ran):
        return f"attempt {attempt}'s gates did not run on a clean checkout"
    names = list(dict.fromkeys(record.name for record in ran))
    commands = {record.name: record.command for record in ran}
    if names != [gate.name for gate in gates] or any(
        commands[gate.name] != gate.command for gate in gates
    ):
        return f"the gates to run are not those that ran on attempt {attempt}"
    if integration := next(
        (r for r in ran if r.kind == "integration" and r.not_applicable is None), None
    ):
        return f"integration gate {integration.name!r} depends on services, not only the tree"
    return VerifyReuse(attempt=attempt, tree=tree, gates=names)
