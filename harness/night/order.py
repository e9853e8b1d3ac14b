"""A night's queue: higher `priority:` first, then lower tier, then file order; a spec with
`after:` comes after the specs it waits for. Unknown ids and cycles are refused up front."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from harness.config.spec import Spec
from harness.errors import InputError


def check_after(specs: list[Spec]) -> None:
    """InputError, before anything runs, for an `after:` naming a spec not in the batch or a
    cycle of them."""
    known = {spec.id for spec in specs}
    for spec in specs:
        unknown = [spec_id for spec_id in spec.after if spec_id not in known]
        if unknown:
            raise InputError(
                f"{spec.source}: after: {', '.join(unknown)} is not a spec of this batch; "
                f"list ids of the batch's specs (known: {', '.join(sorted(known))})"
            )
    try:
        tuple(TopologicalSorter({spec.id: spec.after for spec in specs}).static_order())
    except CycleError as cycle:
        path = " → ".join(cycle.args[1])
        raise InputError(
            f"after: the specs wait for each other in a cycle ({path}); remove one `after:`"
        ) from None


def night_order(specs: list[Spec]) -> list[Spec]:
    """The queue: by priority (higher first), tier, then the order given, except that a spec
    never comes before one it waits for (`after:`)."""
    check_after(specs)
    ranked = sorted(enumerate(specs), key=lambda pair: (-pair[1].priority, pair[1].tier, pair[0]))
    queue: list[Spec] = []
    placed: set[str] = set()
    waiting = [spec for _, spec in ranked]
    while waiting:  # the best-ranked spec whose waits are all placed; no cycles, so one exists
        ready = next(spec for spec in waiting if all(dep in placed for dep in spec.after))
        waiting.remove(ready)
        queue.append(ready)
        placed.add(ready.id)
    return queue
