"""Environment set-up, once per base: policy's `setup:` commands (installing a repository's
dependencies) run in a sandbox on a checkout of the base, and every task's gates reuse what
they made, read-only (see README.md)."""
