"""A fleet's variants: the product of `--vary` lists (or a spec's `fleet:` block), cycled up
to N, each a task `<spec>/v<k>` of one run with its own sandbox and branch."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import get_args

from harness.config.policy import AgentKind
from harness.config.spec import FleetVariant, Spec, Variant
from harness.errors import InputError

VARY_KEYS = ("agent", "model", "prompt")


def parse_vary(options: list[str]) -> dict[str, list[str]]:
    """`--vary KEY=V1,V2` options → {key: values}; a bad one is an InputError naming it."""
    vary: dict[str, list[str]] = {}
    for option in options:
        key, sep, values = option.partition("=")
        if not sep or not values.strip():
            raise InputError(f"--vary {option!r}: write KEY=V1,V2, e.g. --vary model=a,b")
        if key not in VARY_KEYS:
            raise InputError(f"--vary {option!r}: unknown key {key!r}; use {', '.join(VARY_KEYS)}")
        listed = [value.strip() for value in values.split(",") if value.strip()]
        vary.setdefault(key, []).extend(listed)
    for kind in vary.get("agent", []):
        if kind not in get_args(AgentKind):
            raise InputError(
                f"--vary agent={kind}: not an agent kind; use {', '.join(get_args(AgentKind))}"
            )
    return vary


def fleet_variants(spec: Spec, n: int, vary: dict[str, list[str]]) -> list[FleetVariant]:
    """N variants: `--vary`'s product if given, else the spec's `fleet:` block, else N of the
    policy's agent; cycled up to N."""
    if n < 1:
        raise InputError(f"-n {n}: a fleet needs at least 1 variant, e.g. -n 3")
    if vary:
        keys = list(vary)
        choices = [
            FleetVariant.model_validate(dict(zip(keys, values, strict=True)))
            for values in itertools.product(*(vary[key] for key in keys))
        ]
    elif spec.fleet is not None:
        choices = list(spec.fleet.variants)
    else:
        choices = [FleetVariant()]
    return [choices[i % len(choices)] for i in range(n)]


def variant_specs(spec: Spec, variants: list[FleetVariant], prompt_root: Path) -> list[Spec]:
    """One task spec per variant: id `<spec>/v<k>`, the variant recorded, and a `prompt:`
    file's text (relative to `prompt_root`) added to the body."""
    tasks = []
    for k, chosen in enumerate(variants, start=1):
        body = spec.body
        if chosen.prompt:
            path = (prompt_root / chosen.prompt).resolve()
            try:
                body = f"{spec.body}\n{path.read_text(encoding='utf-8').strip()}\n"
            except OSError as exc:
                raise InputError(f"prompt={chosen.prompt}: cannot read {path}: {exc}") from None
        variant = Variant(k=k, **chosen.model_dump())
        tasks.append(
            spec.model_copy(update={"id": f"{spec.id}/v{k}", "variant": variant, "body": body})
        )
    return tasks
