"""A GitLab stand-in on loopback, for the GitLab publisher's tests: the GitHub stand-in's real
git smart HTTP (git http-backend, the token sent as Basic `oauth2:TOKEN`, as GitLab takes
it), and the REST v4 endpoints python-gitlab calls for harness, with state in memory:
merge requests (list by source branch, create with 409 for a second open one, update with
add_labels and reviewer_ids), their notes, commit statuses, users by username. Calls are
counted and faults injected as on the GitHub stand-in (`fail`).

What it does not check: GitLab publishes no complete OpenAPI description of v4, so bodies are
checked by hand for the fields harness sends and nothing more (python-gitlab's own parsing is
the other check); pagination; any endpoint not listed above; permissions (any valid token may
do anything unless a fault is injected); pipelines, approvals and merges.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import unquote

from forge_github import Call, GitHubStandIn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

USERS = {"octocat": 7, "alice": 8}


class GitLabStandIn(GitHubStandIn):
    git_user = "oauth2"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mrs: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, list[dict[str, Any]]] = {}
        self.gl_statuses: dict[str, list[dict[str, Any]]] = {}
        self._gl_ids = itertools.count(500)

    @property
    def gitlab_url(self) -> str:
        return self.url  # python-gitlab adds /api/v4

    def open_mrs(self) -> list[dict[str, Any]]:
        return [mr for mr in self.mrs.values() if mr["state"] == "opened"]

    async def _rest_api(self, request: Request) -> Response:
        raw = request.scope["raw_path"].decode()
        path = raw.removeprefix("/api/v4")
        body = await request.body()
        data = json.loads(body) if body else None
        method = request.method
        template = _template(path)
        auth = request.headers.get("private-token", "")
        with self._lock:
            if auth not in self.tokens:
                status, answer = 401, {"message": "401 Unauthorized"}
            elif (fault := self._fault(method, template)) is not None:
                status, answer = fault.status, fault.body
            else:
                status, answer = self._gitlab(method, template, path, request, data)
            self.calls.append(Call(method, path, template, status, data, auth))
        return JSONResponse(answer, status)

    def _gitlab(
        self, method: str, template: str, path: str, request: Request, data: Any
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        query = request.query_params
        mrs = "/projects/{id}/merge_requests"
        if parts[:2] != ["projects", "acme%2Fshop"] and template != "/users":
            return 404, {"message": "404 Project Not Found"}
        if (method, template) == ("GET", mrs):
            found = [
                mr
                for mr in self.mrs.values()
                if mr["source_branch"] == query.get("source_branch", mr["source_branch"])
                and mr["state"] == query.get("state", mr["state"])
            ]
            return 200, found
        if (method, template) == ("POST", mrs):
            _only(data, {"source_branch", "target_branch", "title", "description"})
            source = data["source_branch"]
            if any(mr["source_branch"] == source for mr in self.open_mrs()):
                message = "Another open merge request already exists for this source branch: !1"
                return 409, {"message": [message]}
            sha, base = self.head_of(source), self.head_of(data["target_branch"])
            if sha is None or base is None:
                return 422, {"message": ["Branch does not exist"]}
            iid = len(self.mrs) + 1
            self.mrs[iid] = {
                "id": next(self._gl_ids),
                "iid": iid,
                "project_id": 1,
                "title": data["title"],
                "description": data.get("description", ""),
                "state": "opened",
                "source_branch": source,
                "target_branch": data["target_branch"],
                "draft": data["title"].startswith("Draft: "),
                "sha": sha,
                "labels": [],
                "reviewers": [],
                "web_url": f"{self.url}/acme/shop/-/merge_requests/{iid}",
            }
            return 201, self.mrs[iid]
        if template == mrs + "/{iid}":
            mr = self.mrs[int(parts[3])]
            mr["sha"] = self.head_of(mr["source_branch"]) or mr["sha"]
            if method == "PUT":
                _only(data, {"title", "description", "add_labels", "reviewer_ids"})
                for key in ("title", "description"):
                    if key in data:
                        mr[key] = data[key]
                mr["draft"] = mr["title"].startswith("Draft: ")
                for label in (data.get("add_labels") or "").split(","):
                    if label and label not in mr["labels"]:
                        mr["labels"].append(label)
                if "reviewer_ids" in data:
                    by_id = {v: k for k, v in USERS.items()}
                    mr["reviewers"] = [
                        {"id": i, "username": by_id[i], "name": by_id[i]}
                        for i in data["reviewer_ids"]
                    ]
            return 200, mr
        if template == mrs + "/{iid}/notes":
            notes = self.notes.setdefault(int(parts[3]), [])
            if method == "POST":
                _only(data, {"body"})
                note = {"id": next(self._gl_ids), "body": data["body"], "system": False}
                notes.append(note)
                return 201, note
            return 200, notes
        if (method, template) == ("PUT", mrs + "/{iid}/notes/{note_id}"):
            _only(data, {"body"})
            [note] = [n for n in self.notes[int(parts[3])] if n["id"] == int(parts[5])]
            note["body"] = data["body"]
            return 200, note
        if (method, template) == ("POST", "/projects/{id}/statuses/{sha}"):
            _only(data, {"state", "name", "description", "target_url"})
            status = {
                "id": next(self._gl_ids),
                "sha": parts[3],
                "status": data["state"],
                "name": data["name"],
                "description": data.get("description"),
                "target_url": data.get("target_url"),
            }
            self.gl_statuses.setdefault(parts[3], []).append(status)
            return 201, status
        if (method, template) == ("GET", "/projects/{id}/repository/commits/{sha}/statuses"):
            return 200, self.gl_statuses.get(parts[4], [])
        if (method, template) == ("GET", "/users"):
            login = query.get("username", "")
            return 200, [{"id": USERS[login], "username": login}] if login in USERS else []
        raise AssertionError(f"the GitLab stand-in does not serve {method} {path}")


def _template(path: str) -> str:
    parts = path.strip("/").split("/")
    names = {1: "{id}", 3: "{iid}", 5: "{note_id}"}
    if parts[:1] == ["users"]:
        return "/users"
    if len(parts) >= 4 and parts[2] == "statuses":
        return "/projects/{id}/statuses/{sha}"
    if len(parts) >= 6 and parts[2] == "repository":
        return "/projects/{id}/repository/commits/{sha}/statuses"
    return "/" + "/".join(names.get(n, unquote(p)) for n, p in enumerate(parts))


def _only(data: Any, allowed: set[str]) -> None:
    """The body is a JSON object holding only fields this endpoint takes."""
    assert isinstance(data, dict), f"expected a JSON object, got {data!r}"
    unknown = set(data) - allowed
    assert not unknown, f"fields GitLab's endpoint does not take: {sorted(unknown)}"
