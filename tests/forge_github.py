"""A GitHub stand-in on loopback, for the GitHub publisher's tests and bench/forge.py.

One Starlette app, served by uvicorn in a thread on 127.0.0.1:

- `/<owner>/<name>.git/…`: real git smart HTTP, `git http-backend` (CGI) over a bare
  repository, behind the check GitHub makes: `Authorization: Basic base64(x-access-token:TOKEN)`
  (401 otherwise). A "protected" branch is refused by the repository's pre-receive hook, with
  GitHub's GH006 message.
- `/api/…`: the REST endpoints harness calls (pulls, issue labels and comments, review
  requests, commit statuses, check runs, the App installation token, a collaborator's
  permission), with state in memory.
  Every request body harness sends and every response given is validated against GitHub's
  official OpenAPI description (tests/github_openapi.py); every call is counted, and faults
  are injected on demand (`fail`): 403 missing permission, 403/429 rate limits with
  retry-after, or any status and body.

What it does not check (so tests cannot rely on it): query parameters other than `head`,
`state` and `per_page` (others are ignored, not validated); pagination (everything fits one
page); headers other than Authorization (no API version, accept or user-agent checks);
response headers against the description; fields newer API versions add (githubkit
speaks 2026-03-10, the npm description an older one: labels carry archived_at/archived_by);
the error bodies of 401 (not in the description for these operations); fine-grained
permissions (any valid token may do anything, unless a fault is injected); GraphQL; merges,
reviews and webhooks; the draft-to-ready transition.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from github_openapi import GitHubOpenAPI, github_openapi
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DOCS = "https://docs.github.com/rest"


@dataclass
class Call:
    method: str
    path: str
    template: str
    status: int
    body: Any
    authorization: str

    @property
    def write(self) -> bool:
        """A change on the forge. Minting an App's installation token is a POST that changes
        nothing there: every App client does it before its first read."""
        return self.method != "GET" and not self.template.endswith("/access_tokens")


@dataclass
class Fault:
    method: str
    template: str
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class PullState:
    number: int
    head: str
    head_sha: str
    base: str
    title: str
    body: str
    draft: bool
    state: str = "open"
    labels: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)


class GitHubStandIn:
    """State of one repository `owner/name` on the stand-in, and the server around it."""

    def __init__(self, root: Path, owner: str = "acme", name: str = "shop") -> None:
        self.api: GitHubOpenAPI = github_openapi()
        self.owner, self.name = owner, name
        self.bare = root / owner / f"{name}.git"
        self.tokens: set[str] = {"ghs_" + "t" * 36}
        self.app_key: str | None = None
        """The App's public key (PEM): installation tokens are issued for JWTs it verifies."""
        self.calls: list[Call] = []
        self.git_requests: list[tuple[str, str, str]] = []
        """(method, path, Authorization header) of each git smart HTTP request."""
        self.faults: list[Fault] = []
        self.server_s = 0.0
        """Time spent serving (validation, state, `git http-backend`), for bench/forge.py."""
        self.pulls: dict[int, PullState] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.comment_pull: dict[int, int] = {}
        self.permissions: dict[str, str] = {}
        """Collaborators' base permission (admin, write, read); anyone else has none."""
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.check_runs: dict[str, list[dict[str, Any]]] = {}
        self._ids = iter(range(1000, 10**9))
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self.port = 0
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare)],
            check=True,
        )
        subprocess.run(
            ["git", "-C", str(self.bare), "config", "http.receivepack", "true"], check=True
        )

    @property
    def token(self) -> str:
        return next(iter(self.tokens))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def git_url(self) -> str:
        return f"{self.url}/{self.owner}/{self.name}.git"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    # --- test controls ---------------------------------------------------------------------

    def protect(self, *branches: str) -> None:
        """Refuse pushes to these branches (glob patterns), as branch protection does."""
        hook = self.bare / "hooks" / "pre-receive"
        patterns = " ".join(f"refs/heads/{b}" for b in branches)
        hook.write_text(
            "#!/bin/sh\nwhile read old new ref; do\n  for p in "
            + patterns
            + '; do case "$ref" in $p) echo "error: GH006: Protected branch update failed for '
            '$ref." >&2; exit 1;; esac; done\ndone\n'
        )
        hook.chmod(0o755)

    def fail(
        self,
        method: str,
        template: str,
        status: int,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method template` get this answer instead."""
        self.faults.append(Fault(method, template, status, body, headers or {}, times))

    def deny(self, method: str, template: str, permission: str, *, times: int = 99) -> None:
        """403 as GitHub answers a token without `permission` (e.g. pull_requests=write)."""
        body = {
            "message": "Resource not accessible by personal access token",
            "documentation_url": DOCS,
            "status": "403",
        }
        headers = {"x-accepted-github-permissions": permission}
        self.fail(method, template, 403, body, headers=headers, times=times)

    def rate_limit(
        self, method: str, template: str, *, retry_after: int = 1, status: int = 429
    ) -> None:
        """A secondary rate limit: 429 (or 403, as GitHub also answers) with retry-after,
        once."""
        body = {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again.",
            "documentation_url": DOCS,
        }
        self.fail(method, template, status, body, headers={"retry-after": str(retry_after)})

    def reads(self) -> int:
        return sum(not call.write for call in self.calls)

    def writes(self) -> int:
        return sum(call.write for call in self.calls)

    def head_of(self, branch: str) -> str | None:
        found = subprocess.run(
            ["git", "-C", str(self.bare), "rev-parse", "--verify", "--quiet", branch],
            capture_output=True,
            text=True,
        )
        return found.stdout.strip() or None

    def open_pulls(self) -> list[PullState]:
        return [pull for pull in self.pulls.values() if pull.state == "open"]

    # --- the server ------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self) -> Iterator[GitHubStandIn]:
        app = Starlette(
            routes=[
                Route("/api/{path:path}", self._rest, methods=["GET", "POST", "PATCH", "PUT"]),
                Route("/{owner}/{repo}.git/{path:path}", self._git, methods=["GET", "POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the GitHub stand-in did not start"
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    async def _git(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await self._git_backend(request)
        finally:
            self.server_s += time.perf_counter() - started

    async def _git_backend(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        self.git_requests.append((request.method, request.url.path, auth))
        if not self._basic_ok(auth):
            return Response(
                "Authentication failed", 401, {"www-authenticate": 'Basic realm="GitHub"'}
            )
        body = await request.body()
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.bare.parent.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.url.path,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": request.headers.get("content-encoding", ""),
            "GIT_PROTOCOL": request.headers.get("git-protocol", ""),
        }
        done = await run_in_threadpool(
            subprocess.run, ["git", "http-backend"], input=body, env=env, capture_output=True
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value.strip()
        return Response(payload, status, headers)

    git_user = "x-access-token"
    """The Basic auth user a token is sent with (GitLab's stand-in: oauth2)."""

    def _basic_ok(self, auth: str) -> bool:
        if not auth.startswith("Basic "):
            return False
        user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        return user == self.git_user and secret in self.tokens

    async def _rest(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await self._rest_api(request)
        finally:
            self.server_s += time.perf_counter() - started

    async def _rest_api(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        raw = await request.body()
        body = json.loads(raw) if raw else None
        method = request.method
        auth = request.headers.get("authorization", "")
        template, _ = self.api.operation(method, path)
        self.api.validate_request(method, path, body)
        with self._lock:
            if template == "/app/installations/{installation_id}/access_tokens":
                status, answer, headers = self._installation_token(auth)
            elif auth.split(" ", 1)[-1] not in self.tokens:
                call = Call(method, path, template, 401, body, auth)
                self.calls.append(call)
                return JSONResponse({"message": "Bad credentials", "documentation_url": DOCS}, 401)
            elif (fault := self._fault(method, template)) is not None:
                status, answer, headers = fault.status, fault.body, fault.headers
            else:
                status, answer = self._handle(method, template, path, request, body)
                headers = {}
            self.calls.append(Call(method, path, template, status, body, auth))
        self.api.validate_response(method, path, status, answer)
        return JSONResponse(answer, status, headers)

    def _fault(self, method: str, template: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.template == template and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _installation_token(self, auth: str) -> tuple[int, Any, dict[str, str]]:
        assert self.app_key is not None and auth.startswith("Bearer ")
        jwt.decode(auth[7:], self.app_key, algorithms=["RS256"])  # raises when not the App's
        token = f"ghs_{next(self._ids):036d}"
        self.tokens.add(token)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        return 201, {"token": token, "expires_at": expires}, {}

    def _handle(
        self, method: str, template: str, path: str, request: Request, body: Any
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        query = request.query_params
        repo = "/repos/{owner}/{repo}"
        if (method, template) == ("GET", f"{repo}/pulls"):
            head = query.get("head", "")
            state = query.get("state", "open")
            found = [
                p
                for p in self.pulls.values()
                if (not head or f"{self.owner}:{p.head}" == head)
                and (state == "all" or p.state == state)
            ]
            return 200, [self._pull(p, simple=True) for p in found]
        if (method, template) == ("POST", f"{repo}/pulls"):
            return self._create_pull(body)
        if template == f"{repo}/pulls/{{pull_number}}":
            pull = self.pulls[int(parts[4])]
            if method == "PATCH":
                for key in ("title", "body", "state"):
                    if key in body:
                        setattr(pull, key, body[key])
            return 200, self._pull(pull)
        if (method, template) == ("POST", f"{repo}/issues/{{issue_number}}/labels"):
            pull = self.pulls[int(parts[4])]
            pull.labels += [n for n in body["labels"] if n not in pull.labels]
            return 200, [self._label(name) for name in pull.labels]
        if (method, template) == ("POST", f"{repo}/pulls/{{pull_number}}/requested_reviewers"):
            pull = self.pulls[int(parts[4])]
            pull.reviewers += [n for n in body.get("reviewers", []) if n not in pull.reviewers]
            return 201, self._pull(pull, simple=True)
        if template == f"{repo}/issues/{{issue_number}}/comments":
            number = int(parts[4])
            if method == "POST":
                comment = self._comment(next(self._ids), number, body["body"])
                self.comments[comment["id"]] = comment
                self.comment_pull[comment["id"]] = number
                return 201, comment
            return 200, [c for i, c in self.comments.items() if self.comment_pull[i] == number]
        if (method, template) == ("PATCH", f"{repo}/issues/comments/{{comment_id}}"):
            comment = self.comments[int(parts[5])]
            comment["body"] = body["body"]
            return 200, comment
        if (method, template) == ("POST", f"{repo}/statuses/{{sha}}"):
            status = self._status(next(self._ids), body)
            self.statuses.setdefault(parts[4], []).insert(0, status)
            return 201, status
        if (method, template) == ("GET", f"{repo}/commits/{{ref}}/statuses"):
            return 200, self.statuses.get(parts[4], [])
        if (method, template) == ("POST", f"{repo}/check-runs"):
            run = self._check_run(next(self._ids), body)
            self.check_runs.setdefault(body["head_sha"], []).insert(0, run)
            return 201, run
        if (method, template) == ("GET", f"{repo}/commits/{{ref}}/check-runs"):
            name = query.get("check_name")
            runs = [r for r in self.check_runs.get(parts[4], []) if name in (None, r["name"])]
            return 200, {"total_count": len(runs), "check_runs": runs}
        if (method, template) == ("GET", f"{repo}/collaborators/{{username}}/permission"):
            login = parts[4]
            permission = self.permissions.get(login, "none")
            answer = self.api.example(
                "repository-collaborator-permission-response-if-user-has-admin-permissions"
            )
            user = answer["user"] | {"login": login, "role_name": permission}
            return 200, answer | {"permission": permission, "role_name": permission, "user": user}
        raise AssertionError(f"the stand-in does not serve {method} {template}")

    def _create_pull(self, body: dict[str, Any]) -> tuple[int, Any]:
        head, base = body["head"].split(":")[-1], body["base"]
        if any(p.head == head and p.state == "open" for p in self.pulls.values()):
            message = f"A pull request already exists for {self.owner}:{head}."
            error = {"resource": "PullRequest", "code": "custom", "message": message}
            return 422, {
                "message": "Validation Failed",
                "errors": [error],
                "documentation_url": DOCS,
            }
        head_sha, base_sha = self.head_of(head), self.head_of(base)
        if head_sha is None or base_sha is None:
            missing = "head" if head_sha is None else "base"
            error = {"resource": "PullRequest", "field": missing, "code": "invalid"}
            return 422, {
                "message": "Validation Failed",
                "errors": [error],
                "documentation_url": DOCS,
            }
        number = len(self.pulls) + 1
        pull = PullState(
            number, head, head_sha, base, body["title"], body.get("body") or "", body["draft"]
        )
        self.pulls[number] = pull
        return 201, self._pull(pull)

    # --- responses, built on the description's own examples --------------------------------

    def _pull(self, pull: PullState, *, simple: bool = False) -> Any:
        out = self.api.example("pull-request-simple" if simple else "pull-request")
        html = f"{self.url}/{self.owner}/{self.name}/pull/{pull.number}"
        out |= {
            "number": pull.number,
            "id": pull.number,
            "html_url": html,
            "title": pull.title,
            "body": pull.body,
            "draft": pull.draft,
            "state": pull.state,
            "labels": [self._label(name) for name in pull.labels],
            "requested_reviewers": [self._user(login) for login in pull.reviewers],
            "requested_teams": [],
        }
        head_sha = self.head_of(pull.head) or pull.head_sha
        out["head"] = out["head"] | {
            "ref": pull.head,
            "sha": head_sha,
            "label": f"{self.owner}:{pull.head}",
        }
        out["base"] = out["base"] | {"ref": pull.base, "label": f"{self.owner}:{pull.base}"}
        return out

    def _label(self, name: str) -> Any:
        label = self.api.example("label-items")[0]
        # githubkit's models (API version 2026-03-10) require archived_at and archived_by,
        # which the npm description (an older version) does not list; both accept null.
        label |= {"archived_at": None, "archived_by": None}
        return label | {"name": name, "id": abs(hash(name)) % 10**6, "default": False}

    def _user(self, login: str) -> Any:
        user = copy.deepcopy(self.api.example("pull-request")["user"])
        return user | {"login": login}

    def _comment(self, comment_id: int, number: int, body: str) -> Any:
        comment = self.api.example("issue-comment")
        url = f"{self.url}/{self.owner}/{self.name}/pull/{number}#issuecomment-{comment_id}"
        return comment | {"id": comment_id, "body": body, "html_url": url}

    def _check_run(self, run_id: int, body: dict[str, Any]) -> Any:
        run = self.api.example("check-run")
        output = body.get("output") or {}
        return run | {
            "id": run_id,
            "name": body["name"],
            "head_sha": body["head_sha"],
            "status": body.get("status", "queued"),
            "conclusion": body.get("conclusion"),
            "details_url": body.get("details_url"),
            "output": run["output"]
            | {"title": output.get("title"), "summary": output.get("summary"), "text": None},
            "pull_requests": [],
        }

    def _status(self, status_id: int, body: dict[str, Any]) -> Any:
        status = self.api.example("status")
        return status | {
            "id": status_id,
            "state": body["state"],
            "context": body.get("context", "default"),
            "description": body.get("description"),
            "target_url": body.get("target_url"),
        }


def sticky_bodies(forge: GitHubStandIn) -> list[str]:
    return [c["body"] for c in forge.comments.values() if "harness:sticky" in c["body"]]


def requests_text(forge: GitHubStandIn) -> str:
    """Every request body the stand-in saw, as one text (to search for secrets)."""
    return "\n".join(json.dumps(call.body) for call in forge.calls)


def _invalid(error: dict[str, Any]) -> dict[str, Any]:
    return {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS}
