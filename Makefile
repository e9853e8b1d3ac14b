# One command each from a fresh clone: `make demo` and `make test` do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# GitHub's official OpenAPI description (npm @octokit/openapi): the GitHub stand-in in the
# tests validates every request and response against it (tests/github_openapi.py).
OPENAPI := .cache/octokit-openapi/node_modules/@octokit/openapi/generated/api.github.com.json
# GitHub's example webhook payloads (npm @octokit/webhooks-examples): what the serve and
# triggers tests post to `harness serve`, so it meets payloads nobody here wrote.
WEBHOOK_EXAMPLES := .cache/octokit-webhooks-examples/node_modules/@octokit/webhooks-examples/api.github.com/index.json
# The MCP Inspector (npm @modelcontextprotocol/inspector): its CLI mode is the MCP client
# nobody here wrote that tests/test_mcp.py points at `harness mcp`.
MCP_INSPECTOR := .cache/mcp-inspector/node_modules/.bin/mcp-inspector

.PHONY: setup demo test lint bench clean openapi webhooks mcp-inspector

$(STAMP): pyproject.toml
	@scripts/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

$(OPENAPI):
	npm install --silent --no-save --prefix .cache/octokit-openapi @octokit/openapi@23

openapi: $(OPENAPI)

$(WEBHOOK_EXAMPLES):
	npm install --silent --no-save --prefix .cache/octokit-webhooks-examples @octokit/webhooks-examples@7

webhooks: $(WEBHOOK_EXAMPLES)

$(MCP_INSPECTOR):
	npm install --silent --no-save --prefix .cache/mcp-inspector @modelcontextprotocol/inspector@0.15

mcp-inspector: $(MCP_INSPECTOR)

demo: $(STAMP)
	$(BIN)/harness run specs/ --policy policies/demo.yaml

test: $(STAMP) $(OPENAPI) $(WEBHOOK_EXAMPLES) $(MCP_INSPECTOR)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict harness graphs cli
# The import contract (pyproject.toml). No cache: it would be one more untracked directory,
# and the check takes 0.2 s.
	$(BIN)/lint-imports --no-cache
# One worker per core: the suite is mostly real subprocesses (sandboxes, git, PostgreSQL,
# whole harness runs) waiting on each other, and on 2 cores this takes it from 11 to 8 minutes.
# worksteal: a worker with nothing left takes tests queued for the other, instead of idling
# while the other finishes a queue that ends in long whole-run tests.
	$(BIN)/pytest -n auto --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache/octokit-openapi .cache/octokit-webhooks-examples .cache/mcp-inspector
