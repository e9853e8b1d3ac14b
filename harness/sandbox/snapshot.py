"""A sandbox over a copy of a working tree, for `harness check`: the gates see the tree as it
is (uncommitted changes included) and nothing they do reaches the user's files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from harness.git import GitRepository
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import DEFAULT_CONFINEMENT, Confinement


class SnapshotSandbox(ConfinedDirectory):
    def __init__(self, home: Path, confinement: Confinement = DEFAULT_CONFINEMENT) -> None:
        super().__init__(
            home / "tree",
            home / "tree",
            home / "scratch",
            limits=confinement.limits,
            read_paths=confinement.read_paths,
        )
        self.home = home
        """The temporary directory holding the copy and the scratch dir."""

    @classmethod
    def of(cls, source: Path, confinement: Confinement = DEFAULT_CONFINEMENT) -> SnapshotSandbox:
        """Copy `source`'s files (in a git work tree: tracked and untracked, not ignored ones)."""
        home = Path(tempfile.mkdtemp(prefix="harness-check-"))
        (home / "tree").mkdir()
        (home / "scratch").mkdir()
        for relpath in _files(source):
            target = home / "tree" / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relpath, target, follow_symlinks=False)
        return cls(home, confinement)

    def teardown(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def _files(source: Path) -> list[Path]:
    listed = GitRepository.listed_files(source)
    if listed is not None:
        # Deleted but still tracked files are listed too; only what exists is copied.
        return [n for n in listed if (source / n).is_file() or (source / n).is_symlink()]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        files += [Path(dirpath, f).relative_to(source) for f in filenames]
    return files
