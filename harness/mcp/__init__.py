"""`harness mcp`: an MCP server (the official SDK) over harness's runs; see README.md."""
