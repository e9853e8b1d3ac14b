"""harness: parallel validation loops for coding agents. See README.md in this folder."""
