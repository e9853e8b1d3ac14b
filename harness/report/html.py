"""The report as one self-contained HTML file: Jinja2 with autoescape, the agent's Markdown
rendered by markdown-it-py (raw HTML off) and sanitised by nh3, diffs highlighted by Pygments
with its CSS inlined. No scripts, no external stylesheets, fonts or images: opening it makes
no request."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from itertools import groupby

import nh3
from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from pygments import lex
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer
from pygments.token import STANDARD_TYPES, Whitespace, _TokenType

from harness.report.model import Report

SAFE_TAGS = {
    "p", "em", "strong", "code", "pre", "ul", "ol", "li", "blockquote", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "del",
}  # fmt: skip
"""What the agent's Markdown may become: text structure only; no links, images or forms, which
could make the page fetch something or mislead a reviewer."""


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("harness.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["agent_markdown"] = agent_markdown
    env.filters["diff_html"] = diff_html
    env.filters["usd"] = lambda value: f"${value:,.2f}"
    env.filters["seconds"] = _seconds
    env.filters["when"] = when
    return env


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M %Z")


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def agent_markdown(text: str) -> Markup:
    """The agent's Markdown as sanitised HTML (it wrote it: nothing of it is trusted)."""
    return Markup(nh3.clean(_MARKDOWN.render(text), tags=SAFE_TAGS, attributes={}))


_DIFF_FORMATTER = HtmlFormatter(cssclass="diff")
_DIFF_LEXER = DiffLexer()


@cache
def _css_class(token: _TokenType) -> str:
    """Pygments' short CSS class of a token type (its nearest ancestor's that has one)."""
    found: _TokenType | None = token
    while found is not None and found not in STANDARD_TYPES:
        found = found.parent
    return STANDARD_TYPES[found] if found is not None else ""


def _classed(diff: str) -> Iterator[tuple[str, str]]:
    """(CSS class, text) of each token; a line's ending whitespace keeps its line's class."""
    css = ""
    for token, text in lex(diff, _DIFF_LEXER):
        if token is not Whitespace:
            css = _css_class(token)
        yield css, text


def diff_html(diff: str) -> Markup:
    """A diff, highlighted: Pygments' DiffLexer tokens as spans with Pygments' own CSS classes
    (the style sheet is `_diff_css`), neighbours of one class in one span, the text escaped.
    Formatted here rather than by HtmlFormatter, which took 1.8 times as long on a 200-task night
    (bench/report.py)."""
    spans = []
    for css, group in groupby(_classed(diff), key=lambda pair: pair[0]):
        text = html.escape("".join(text for _, text in group), quote=False)
        spans.append(f'<span class="{css}">{text}</span>' if css else text)
    return Markup(f'<div class="diff"><pre>{"".join(spans)}</pre></div>')


@cache
def _diff_css() -> Markup:
    # types-Pygments leaves get_style_defs untyped; it returns the CSS text.
    css: str = _DIFF_FORMATTER.get_style_defs(".diff")  # type: ignore[no-untyped-call]
    return Markup(css)


def render_html(report: Report) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(report=report, pygments_css=_diff_css())
