"""`harness report`: the HTML report opened in a real headless browser (Debian's chromium,
driven by Playwright through its executable_path: one browser start), the Markdown digest,
the terminal summary and a run with no records.

Two nights of the tiny project make the run: the first verifies `steady` and `flips`; the
second verifies `steady`, escalates `flips` (newly failing) and skips `waits` (after: flips).
The escalated task's agent wrote Markdown meant to make the page fetch from a loopback server
and run a script: the page must do neither. The screenshot is saved under runs/ for a person
to look at (README.md shows the demo's, from tests/test_demo_e2e.py)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, TinyProject, make_tiny_repo, run_cli
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO_ROOT / "runs" / "report-test" / "night-report.png"


class CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        CountingHandler.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Nights:
    tiny: TinyProject
    port: int

    @property
    def run_dir(self) -> Path:
        return self.tiny.runs / "n2"


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nights]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    tiny = TinyProject(tmp_path_factory.mktemp("report"))
    make_tiny_repo(tiny.repo)
    tiny.write_policy(concurrency=1)
    until = (datetime.now().astimezone() + timedelta(minutes=10)).isoformat()
    argv = ["night", str(tiny.specs), "--policy", str(tiny.root / "policy.yaml")]
    argv += ["--runs-dir", str(tiny.runs), "--until", until]
    tiny.add_spec("steady")
    tiny.add_spec("flips", title="Flips <b>bold</b> & fails")
    tiny.add_spec("waits", after=["flips"])
    assert run_cli([*argv, "--run-id", "n1"], tiny.root).exit_code == 0
    lure = (
        f"I *fixed* it.\n\n![pixel](http://127.0.0.1:{port}/markdown.png)\n\n"
        f'<img src="http://127.0.0.1:{port}/raw.png"><script>document.title="owned"</script>\n\n'
        f"[click](javascript:alert(1))"
    )
    wrong = {"tool": "write_file", "args": {"path": "wrong.txt", "content": "<script>x</script>"}}
    tiny.add_spec(
        "flips",
        title="Flips <b>bold</b> & fails",
        attempts=[[wrong, {"tool": "finish", "args": {"summary": lure}}]],
        budget={"max_attempts": 1},
    )
    assert run_cli([*argv, "--run-id", "n2"], tiny.root).exit_code == 0
    try:
        yield Nights(tiny, port)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Page:
    text: dict[str, str]
    """Each section's visible text, by its id."""
    order: list[str]
    """The sections' headings, top to bottom."""
    needs_you: list[dict[str, str]]
    elements: dict[str, int]
    requests: list[str]
    title: str


@pytest.fixture(scope="module")
def page(nights: Nights) -> Page:
    html = nights.run_dir / "report.html"
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            view = browser.new_page(viewport={"width": 1000, "height": 760})
            view.on("request", lambda request: requests.append(request.url))
            view.goto(html.as_uri(), wait_until="load")
            sections = ["totals", "needs-you", "verified", "skipped", "missed"]
            found = Page(
                text={s: view.locator(f"#{s}").inner_text() for s in sections},
                order=view.locator("h2").all_inner_texts(),
                needs_you=[
                    {
                        "outcome": card.get_attribute("data-outcome") or "",
                        "heading": card.locator("h3").inner_text(),
                        "text": card.inner_text(),
                    }
                    for card in view.locator("#needs-you article").all()
                ],
                elements={
                    selector: view.locator(selector).count()
                    for selector in ("script", "img", "a[href^='javascript']", "h3 b", "link")
                },
                requests=requests,
                title=view.title(),
            )
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            view.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    return found


def test_needs_you_comes_first_and_lists_the_escalated_task(page: Page) -> None:
    assert page.order[:3] == ["Totals", "Needs you", "Verified"]
    [card] = page.needs_you
    assert card["outcome"] == "escalated"
    assert card["heading"].startswith("ESCALATED flips")  # text-transform: uppercase
    assert "Failing gate: done (attempt 1, exit 1)" in card["text"]
    assert "harness/n2/flips" in card["text"]
    assert "Flips <b>bold</b> & fails" in card["heading"]  # the title as text, not markup


def test_the_totals_and_the_change_since_the_previous_night(page: Page) -> None:
    totals = page.text["totals"]
    for count, name in ((1, "verified"), (1, "escalated"), (0, "error"), (1, "skipped")):
        assert f"{count}\n{name}" in totals
    assert "compared with n1: newly failing flips; newly verified none" in totals
    assert "after: flips ended escalated, not verified" in page.text["skipped"]
    assert "steady" in page.text["verified"]


def test_the_page_makes_no_request_and_runs_nothing_the_agent_wrote(
    page: Page, nights: Nights
) -> None:
    assert page.requests == [(nights.run_dir / "report.html").as_uri()]
    assert CountingHandler.hits == []
    assert page.elements == {
        "script": 0,
        "img": 0,
        "a[href^='javascript']": 0,
        "h3 b": 0,
        "link": 0,
    }
    assert page.title == "harness night report · n2"
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_markdown_digest_and_the_cli(nights: Nights) -> None:
    tiny = nights.tiny
    result = run_cli(
        ["report", "n2", "--previous", "n1", "--format", "md", "--runs-dir", str(tiny.runs)],
        tiny.root,
    )
    assert result.exit_code == 0, result.stderr
    assert "report.md" in result.stdout
    digest = (nights.run_dir / "report.md").read_text("utf-8")
    assert digest.index("## Needs you") < digest.index("## Verified")
    assert "### flips: escalated" in digest
    assert "- branch: `harness/n2/flips`" in digest
    assert "newly failing flips" in digest
    assert "127.0.0.1" not in digest  # the agent's words stay out of the digest
    terminal = run_cli(
        ["report", "n2", "--format", "terminal", "--runs-dir", str(tiny.runs)], tiny.root
    )
    assert terminal.exit_code == 0
    assert "1 verified · 1 escalated · 0 error · 1 skipped · 0 missed" in terminal.stdout
    assert "newly failing flips" in terminal.stdout


def test_a_run_with_no_records_is_a_clear_error(nights: Nights) -> None:
    tiny = nights.tiny
    result = run_cli(["report", "nope", "--runs-dir", str(tiny.runs)], tiny.root)
    assert result.exit_code == 2
    assert "no records of run 'nope'" in result.stderr
    bad_previous = run_cli(
        ["report", "n2", "--previous", "nope", "--runs-dir", str(tiny.runs)], tiny.root
    )
    assert bad_previous.exit_code == 2
    assert "--previous 'nope': no such run" in bad_previous.stderr
