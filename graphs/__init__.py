"""Workflows: LangGraph StateGraphs that call into harness/. See README.md in this folder."""
