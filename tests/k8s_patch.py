"""The pure parts of the Kubernetes API emulator: RFC 6902 JSON patch (with `test`), RFC 7386
merge patch, label selectors, and the API error the emulator answers with."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


# --- JSON patch (RFC 6902) and merge patch (RFC 7386) -----------------------------------------


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(400, "BadRequest", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    for token in tokens[:-1]:
        doc = _child(doc, token)
    return doc


def _child(doc: Any, token: str) -> Any:
    try:
        return doc[int(token)] if isinstance(doc, list) else doc[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiError(422, "Invalid", f"jsonpatch: doc is missing path {token!r}") from None


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, tokens = op.get("op"), _pointer(op.get("path", ""))
        parent, last = _parent(doc, tokens), tokens[-1]
        if kind == "test":
            if _child(parent, last) != op.get("value"):
                raise ApiError(422, "Invalid", f"Testing value {op['path']} failed")
        elif kind == "remove":
            _child(parent, last)
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            value = copy.deepcopy(op.get("value"))
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "replace" or index > len(parent):
                    _child(parent, last)
                    parent[index] = value
                else:
                    parent.insert(index, value)
            elif isinstance(parent, dict):
                if kind == "replace":
                    _child(parent, last)
                parent[last] = value
            else:
                raise ApiError(422, "Invalid", f"jsonpatch: cannot {kind} at {op['path']}")
        else:
            raise ApiError(400, "BadRequest", f"unsupported JSON patch op {kind!r}")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- label selectors --------------------------------------------------------------------------


def _requirements(selector: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            yield selector[start:i].strip()
            start = i + 1
    if selector[start:].strip():
        yield selector[start:].strip()


def matches(selector: str, labels: dict[str, str]) -> bool:
    for req in _requirements(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", req):
            values = {v.strip() for v in m.group(3).split(",")}
            inside = labels.get(m.group(1)) in values
            if inside != (m.group(2) == "in"):
                return False
        elif "!=" in req:
            key, value = req.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in req:
            key, value = req.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True
