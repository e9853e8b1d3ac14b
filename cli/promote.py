"""`harness promote RUN_ID SPEC [--variant K] [--force]`: a fleet's variant (default: the
top-ranked) becomes the spec's PR record (harness.fleet.promote), and, when the run's policy
publishes on a forge (`publish.forge: github|gitlab`), the spec's PR there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import RunsDirOption, StoreOption, store_url
from cli.render import console, fail


def promote(
    run_id: Annotated[str, typer.Argument(help="The fleet's run id.")],
    spec_id: Annotated[str, typer.Argument(metavar="SPEC", help="The spec id (before /v<k>).")],
    variant: Annotated[
        int | None, typer.Option("--variant", help="The variant k (default: rank 1).", min=1)
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote an unverified variant, as a draft.")
    ] = False,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Publish a fleet's variant as its spec's PR (record), listing the other variants."""
    from harness.config.policy import parse_policy
    from harness.config.spec import Spec
    from harness.errors import InputError
    from harness.fleet.promote import promote as promote_variant
    from harness.fleet.promote import publish_promoted
    from harness.publish import PublishRefused
    from harness.publish.forge import forge_factory, require_client
    from harness.store import open_store

    try:
        record = open_store(store_url(store, None, runs_dir)).get_run(run_id)
        if record is None:
            raise InputError(f"promote: no run {run_id!r}; `harness runs` lists the runs")
        source = Path(record.policy_path)
        config = parse_policy(record.policy_text, source).publish
        if config.forge != "local":
            config.check_forge(source)
            require_client(config.forge)
        specs = [Spec.model_validate(spec) for spec in record.specs]
        done = promote_variant(Path(record.run_dir), specs, spec_id, variant, force)
    except InputError as exc:
        raise fail(str(exc)) from None
    kind = "draft PR record" if done.draft else "PR record"
    console().print(
        f"promoted {done.variant.spec_id} (rank {done.variant.rank}): {kind} {done.record}"
    )
    for name in done.missing_tests:
        console().print(f"  a test another verified variant added, not in this one: {name}")
    if config.forge == "local":
        return
    [chosen] = [spec for spec in specs if spec.id == done.variant.spec_id]
    try:
        outcome = publish_promoted(
            Path(record.run_dir), chosen, done.variant, config, forge_factory(config, source)
        )
    except PublishRefused as refused:
        console().print(f"{spec_id}: not published on {config.forge}: {refused}", soft_wrap=True)
        raise typer.Exit(1) from None
    if outcome.stale is not None:
        console().print(f"{spec_id}: not converged: {outcome.stale}", soft_wrap=True)
        raise typer.Exit(1)
    draft = "draft PR" if done.draft else "PR"
    console().print(f"{spec_id}: {draft} on {config.forge}: {outcome.url}", soft_wrap=True)
