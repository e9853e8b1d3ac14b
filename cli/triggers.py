"""`harness triggers replay` and `harness triggers list`: recorded webhook payloads through the
same intake as `harness serve` (offline, for debugging and tests), and the trigger ledger."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli.options import RunsDirOption, store_url
from cli.render import console, escape, fail, plural
from cli.serve import ConfigOption, StoreOption, TriggerService

triggers_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Ticket triggers: replay recorded webhooks, list the trigger ledger.",
)

SourceChoice = Literal["github", "linear", "generic"]


@triggers_app.command(short_help="Feed recorded webhook payloads through serve's intake.")
def replay(
    files: Annotated[list[Path], typer.Argument(help="Recorded payloads (JSON bodies).")],
    config: ConfigOption,
    source: Annotated[SourceChoice, typer.Option(help="Which source sent them.")] = "github",
    event: Annotated[
        str | None,
        typer.Option(
            help="GitHub's X-GitHub-Event. Default: the file name up to its first '.', "
            "e.g. issues for issues.labeled.json."
        ),
    ] = None,
    no_run: Annotated[
        bool,
        typer.Option("--no-run", help="Only record them; the admitted tasks are not run here."),
    ] = False,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Feed recorded payloads through the same path as `harness serve` (ledger, dedupe,
    admission, status comment), without signatures: the files are the operator's. The admitted
    tasks then run here, as serve's workers would run them (not with --no-run)."""
    service = TriggerService.open(config, runs_dir, store, None, need_secrets=False)
    admitted = 0
    for path in files:
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise fail(f"{path}: cannot read: {exc.strerror}") from None
        headers = {
            "x-github-event": event or path.name.split(".")[0],
            "x-github-delivery": f"replay-{uuid.uuid4()}",
        }
        receipt = service.intake.admit(source, headers, body)
        admitted += receipt.entry is not None and receipt.entry.verdict == "admitted"
        console().print(f"{escape(str(path))}: {escape(receipt.message)}", soft_wrap=True)
    if admitted and not no_run:
        service.start()
        while not service.lanes.idle():
            time.sleep(0.2)
    service.stop()


@triggers_app.command(name="list", short_help="Show the trigger ledger, newest first.")
def list_(
    limit: Annotated[int, typer.Option(help="Rows to show.", min=1)] = 50,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """The trigger ledger, newest first: each delivery's time, source, delivery id, ticket,
    intent, verdict, run and reason."""
    from harness.errors import InputError
    from harness.store import open_store

    try:
        state = open_store(store_url(store, None, runs_dir))
    except InputError as exc:
        raise fail(str(exc)) from None
    rows = state.trigger_deliveries(limit)
    # Plain lines, one per delivery: whole ids and reasons, greppable, never wrapped mid-word.
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.received_at))
        fields = [when, row.source, row.delivery_id, row.ticket_key or "-", row.intent or "-"]
        fields += [row.verdict, row.run_id or "-"]
        line = "  ".join(fields) + (f"  {row.reason}" if row.reason else "")
        console().print(escape(line), highlight=False, soft_wrap=True)
    console().print(f"{plural(len(rows), 'delivery', 'deliveries')} shown")
