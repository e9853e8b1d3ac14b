"""GitHub's official OpenAPI description (npm `@octokit/openapi`), as JSON Schema validators
for the loopback GitHub stand-in (tests/forge_github.py): every request body harness sends and
every response the stand-in gives is checked against it.

The package is installed by `make openapi` (which `make test` runs), or here on first use with
`npm install --prefix .cache/octokit-openapi`; the npm registry is reachable from CI. The
13 MB description is loaded once per test session.

OpenAPI 3.0 schemas are JSON Schema draft 4 plus `nullable`; `nullable: true` is rewritten
to allow null, and the rest is validated by jsonschema's Draft4Validator with refs resolved
inside the document.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / ".cache" / "octokit-openapi"
PACKAGE = "@octokit/openapi@23"
DESCRIPTION = PREFIX / "node_modules/@octokit/openapi/generated/api.github.com.json"
BASE = "urn:github-openapi"


def ensure_installed() -> Path:
    if not DESCRIPTION.is_file():
        PREFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-save", "--prefix", str(PREFIX), PACKAGE],
            check=True,
            timeout=600,
        )
    return DESCRIPTION


def _allow_null(node: Any) -> Any:
    if isinstance(node, list):
        return [_allow_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _allow_null(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class GitHubOpenAPI:
    """Operations by method and path template, with validators for their bodies."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """The path template and operation object a request is for (KeyError if none)."""
        # Literal segments beat parameters: /pulls/comments before /pulls/{pull_number}.
        found = sorted(
            (template for pattern, template in self.templates if pattern.match(path)),
            key=lambda template: template.count("{"),
        )
        for template in found:
            operation = self.document["paths"][template].get(method.lower())
            if operation is not None:
                return template, operation
        raise KeyError(f"{method} {path} is not in GitHub's OpenAPI description")

    def validate_request(self, method: str, path: str, body: Any) -> None:
        template, operation = self.operation(method, path)
        request = operation.get("requestBody")
        if request is None:
            assert body is None, f"{method} {template} takes no body, got {body!r}"
            return
        where = f"/paths/{_escape(template)}/{method.lower()}/requestBody"
        self._validate(
            f"{where}/content/application~1json/schema", body, f"request {method} {template}"
        )

    def validate_response(self, method: str, path: str, status: int, body: Any) -> None:
        template, operation = self.operation(method, path)
        responses = operation["responses"]
        response = responses.get(str(status))
        what = f"response {status} to {method} {template}"
        if response is None and status in (403, 429):
            # Rate limits may answer any request, documented for it or not: GitHub's error
            # shape, then.
            self._validate("/components/schemas/basic-error", body, what)
            return
        assert response is not None, f"{method} {template}: {status} is not a documented status"
        where = f"/paths/{_escape(template)}/{method.lower()}/responses/{status}"
        if "$ref" in response:
            where = response["$ref"].removeprefix("#")
            response = self._resolve(response["$ref"])
        if "application/json" not in response.get("content", {}):
            return
        self._validate(f"{where}/content/application~1json/schema", body, what)

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)

    def _validate(self, pointer: str, instance: Any, what: str) -> None:
        """`instance` against the schema at `pointer` in the document."""
        validator = jsonschema.Draft4Validator(
            {"$ref": f"{BASE}#{quote(pointer)}"}, registry=self.registry
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            raise AssertionError(
                f"{what} does not match GitHub's OpenAPI description at "
                f"{'/'.join(map(str, first.absolute_path)) or '(top)'}: {first.message[:300]}"
            )

    def example(self, name: str) -> Any:
        """One of the description's own examples (components/examples), e.g. pull-request."""
        return json.loads(json.dumps(self.document["components"]["examples"][name]["value"]))


def _escape(template: str) -> str:
    """A path template as one JSON pointer segment."""
    return template.replace("~", "~0").replace("/", "~1")


@functools.cache
def github_openapi() -> GitHubOpenAPI:
    with ensure_installed().open(encoding="utf-8") as handle:
        return GitHubOpenAPI(_allow_null(json.load(handle)))
