"""Engineer-directed fleets: N variants of one spec as tasks of one run, ranked on evidence
harness measured, one promoted to the spec's PR (see README.md)."""
