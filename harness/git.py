"""Git operations harness needs, on the user's repository and on task worktrees: the only
module that runs git on the host.

The user's checkout is never switched, stashed or written to: all work happens in worktrees on
task branches. Every call goes through `_call` (GitPython's `Git` command wrapper), so the exact
git invocation, and what keeps git from running anything a task's tree could supply, are in one
place.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from harness.errors import InfrastructureError, InputError

# Commits made by harness must work on a fresh machine that has no git identity configured.
_IDENTITY = ("-c", "user.name=harness", "-c", "user.email=harness@localhost")
# On every call: the user's config may name programs git runs at paths relative to the work
# tree, which in a task's worktree the agent writes: an fsmonitor (e.g. `./fsmonitor.sh`) and
# hooks (a relative core.hooksPath, as husky's `.husky`; `--no-verify` skips only pre-commit
# and commit-msg, not prepare-commit-msg, post-commit or reference-transaction).
_NO_PROGRAMS = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")
# Nor is any nested repository entered: the agent can make one (a commit records it as a
# gitlink), and git trusts a repository's own .git/config, which there the agent writes (its
# filters, fsmonitor, includes). Whatever the user's config says, nothing recurses into one,
# and a diff names a gitlink's commit rather than diffing inside it.
_NO_NESTED = ("-c", "submodule.recurse=false", "-c", "diff.submodule=short")
_IGNORE_NESTED = "--ignore-submodules=all"
# Diffs never run an external diff or a textconv filter (.gitattributes, which the agent writes,
# chooses them), and name paths from the top level whatever diff.relative says.
_DIFF = (
    "diff",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--submodule=short",
)

Lines = list[tuple[int, str]]
"""Lines of a diff with their line numbers."""

# `git worktree add/remove` edit shared files under .git (worktrees/, refs); serialise them per
# repository so parallel tasks never race on git's lock files.
_repo_locks: dict[str, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


def _lock_for(toplevel: Path) -> threading.Lock:
    with _repo_locks_guard:
        return _repo_locks.setdefault(str(toplevel), threading.Lock())


def refused_in_branch_names(name: str) -> bool:
    """Whether git's own ref rules (`git check-ref-format`) refuse `refs/heads/<name>`: `..`,
    a component starting with `.` or ending in `.lock`, `//`, a trailing `/` or `.`, and more."""
    try:
        _call(git.Git(), ("check-ref-format", f"refs/heads/{name}"))
    except InfrastructureError:
        return True
    return False


class GitRepository:
    """A repository a spec points at; `subdir` is where the spec's repo sits inside it."""

    def __init__(self, toplevel: Path) -> None:
        self.toplevel = toplevel
        self._git = git.Git(str(toplevel))
        self._no_filters: tuple[str, ...] | None = None
        self._common_dir: Path | None = None

    @classmethod
    def containing(cls, path: Path, *, source: Path) -> GitRepository:
        """The repository whose work tree holds `path`; InputError (naming `source`) if none."""
        if not path.is_dir():
            raise InputError(f"{source}: repo: {path} is not a directory (fix the `repo:` path)")
        try:
            repo = git.Repo(path, search_parent_directories=True)
        except git.InvalidGitRepositoryError:
            raise InputError(
                f"{source}: repo: {path} is not inside a git repository (run `git init` there, "
                "or point `repo:` at a clone)"
            ) from None
        if repo.working_tree_dir is None:
            raise InputError(f"{source}: repo: {path} is a bare repository; point at a clone")
        return cls(Path(repo.working_tree_dir).resolve())

    def resolve_commit(self, ref: str, *, source: Path) -> str:
        try:
            return self._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except InfrastructureError:
            raise InputError(
                f"{source}: base: ref {ref!r} not found in {self.toplevel} "
                "(name an existing branch, tag or commit, or omit `base:` to use HEAD)"
            ) from None

    def common_dir(self) -> Path:
        """The repository's shared .git directory (objects, refs), also for linked worktrees;
        read once per GitRepository."""
        if self._common_dir is None:
            out = self._run("rev-parse", "--path-format=absolute", "--git-common-dir")
            self._common_dir = Path(out.strip())
        return self._common_dir

    def add_worktree(self, path: Path, branch: str | None, commit: str) -> Path:
        """Create `branch` at `commit` checked out in a new worktree at `path` (detached at
        `commit` when `branch` is None). Returns the worktree's git dir, read before anything
        but git has been in it.

        Only git's shared files (worktrees/, refs) need the repository's lock: the worktree is
        registered under it without a checkout, and the checkout, nearly all of the time and
        linear in the repository's size, runs outside it in the worktree's own index (what
        `git worktree add` itself runs: `reset --hard`), so one task's checkout (or a sandbox
        pool's refill) does not hold up another's."""
        where = ["-b", branch] if branch else ["--detach"]
        with _lock_for(self.toplevel):
            self._run("worktree", "add", "--quiet", "--no-checkout", *where, str(path), commit)
        in_tree = git.Git(str(path))
        git_dir = Path(_call(in_tree, ("rev-parse", "--absolute-git-dir")).strip())
        if self._no_filters is None:
            self._no_filters = _filters_off(self._git, ())
        where_tree = (*self._no_filters, f"--git-dir={git_dir}", f"--work-tree={path}")
        _call(in_tree, ("reset", "--quiet", "--hard", "--no-recurse-submodules"), where_tree)
        return git_dir

    def move_worktree(self, path: Path, to: Path) -> None:
        """Move the worktree at `path` to `to` (a rename: constant time whatever its size)."""
        with _lock_for(self.toplevel):
            self._run("worktree", "move", str(path), str(to))

    def create_branch(self, branch: str, commit: str) -> None:
        """Create `branch` at `commit`; InfrastructureError if it already exists."""
        with _lock_for(self.toplevel):
            self._run("update-ref", f"refs/heads/{branch}", commit, "0" * 40)

    def check_out_branch(self, git_dir: Path, branch: str) -> None:
        """Make the worktree whose git dir is `git_dir` (the repository's own record of it,
        never read from its tree) be on `branch`, without touching its files or index: for a
        worktree detached at the commit `branch` points at."""
        _call(
            self._git, ("symbolic-ref", "HEAD", f"refs/heads/{branch}"), (f"--git-dir={git_dir}",)
        )

    def has_commit(self, sha: str) -> bool:
        try:
            self._run("cat-file", "-e", f"{sha}^{{commit}}")
        except InfrastructureError:
            return False
        return True

    def attach_worktree(self, path: Path, branch: str) -> None:
        """Check an existing `branch` out in a new worktree at `path` (a resumed task: its
        branch holds the work so far). A stale worktree left at `path` is removed first."""
        with _lock_for(self.toplevel):
            if path.exists():
                with contextlib.suppress(InfrastructureError):
                    self._run("worktree", "remove", "--force", str(path))
                shutil.rmtree(path, ignore_errors=True)
            self._run("worktree", "prune")
            self._run("worktree", "add", "--quiet", str(path), branch)

    def worktree_git_dir(self, root: Path) -> Path | None:
        """The repository's own administrative directory for the worktree at `root` (found by
        the path it records, not by name: git numbers same-named worktrees), or None."""
        for admin in (self.common_dir() / "worktrees").glob("*"):
            with contextlib.suppress(OSError):
                if Path((admin / "gitdir").read_text(encoding="utf-8").strip()) == root / ".git":
                    return admin
        return None

    def prune_worktrees(self) -> None:
        """Forget worktrees whose directories are gone."""
        with _lock_for(self.toplevel):
            self._run("worktree", "prune")

    def refs(self, prefix: str) -> list[str]:
        """Full ref names under `prefix` (e.g. refs/heads/harness/<run-id>/)."""
        out = self._run("for-each-ref", "--format=%(refname)", prefix)
        return [line for line in out.splitlines() if line]

    def delete_ref(self, ref: str) -> None:
        """Delete a branch or other ref; one already gone is not an error (gc is idempotent)."""
        with _lock_for(self.toplevel), contextlib.suppress(InfrastructureError):
            self._run("update-ref", "-d", ref)

    def remove_worktree(self, path: Path) -> None:
        """Remove a worktree (its branch stays); a leftover directory git forgot is deleted."""
        with _lock_for(self.toplevel):
            if path.exists():
                try:
                    self._run("worktree", "remove", "--force", str(path))
                except InfrastructureError:
                    shutil.rmtree(path)
            self._run("worktree", "prune")

    def has_path(self, commit: str, relpath: Path) -> bool:
        """Whether `relpath` (a directory or file) exists in `commit`'s tree."""
        if str(relpath) == ".":
            return True
        return bool(self._run("ls-tree", "--name-only", commit, "--", str(relpath)).strip())

    def branch_exists(self, branch: str) -> bool:
        try:
            self._run("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        except InfrastructureError:
            return False
        return True

    def read_file(self, commit: str, relpath: str) -> str | None:
        """A file's text in `commit` (`relpath` from the top level), or None when it has none."""
        return _blob(self._git, (), commit, relpath)

    def archive(self, commit: str) -> bytes:
        """`commit`'s whole tree as a tar archive: its files, with no worktree made."""
        if self._no_filters is None:
            self._no_filters = _filters_off(self._git, ())
        return _call_bytes(self._git, ("archive", "--format=tar", commit), self._no_filters)

    def uncommitted(self, directory: Path) -> list[str]:
        """Paths under `directory` that differ from HEAD, or are untracked and not ignored."""
        out = self._run("status", "--porcelain", "-z", "--", str(directory))
        entries = [entry for entry in out.split("\0") if entry]
        # A rename's second entry (its old name) has no "XY " status in front.
        return [entry[3:] for entry in entries if len(entry) > 3 and entry[2] == " "]

    @staticmethod
    def listed_files(directory: Path) -> list[Path] | None:
        """The files git knows under `directory`, relative to it: tracked (also those deleted
        since) and untracked but not ignored. None when `directory` is in no work tree."""
        try:
            listing = ("ls-files", "-z", "--cached", "--others", "--exclude-standard")
            out = _call(git.Git(str(directory)), listing)
        except InfrastructureError:
            return None
        return [Path(name) for name in out.split("\0") if name]

    def _run(self, *args: str) -> str:
        # A task branch checked out again (a resumed task) holds the agent's .gitattributes.
        if self._no_filters is None:
            self._no_filters = _filters_off(self._git, ())
        return _call(self._git, args, self._no_filters)


@dataclass(frozen=True)
class Refusal:
    """What policy keeps out of a task's commits, and why."""

    kind: str
    """What was refused, as a problem type (e.g. file-too-large)."""
    reason: str
    """One line naming what and the limit it broke."""
    paths: tuple[str, ...] = ()
    """Left out of every commit (from the top level); the rest is committed."""
    everything: bool = False
    """Nothing is committed: the change as a whole is refused."""


CommitCheck = Callable[[Path, list[str]], Refusal | None]
"""Given a worktree's root and the files a commit would take (from its top level: tracked and
untracked but not ignored, what `git add --all` takes), what policy refuses of them."""


class Worktree:
    """A task's worktree: committing work in progress and describing the change against base.

    Sandboxed commands can write anything in the worktree, so harness never lets git discover
    its repository from it (a forged `.git` file could point git at a repository whose config
    runs commands, e.g. core.fsmonitor, or at one where the agent's change is not there to
    see). Every call names the git directory recorded when the worktree was made, before any
    agent ran, and the work tree.
    """

    def __init__(
        self, root: Path, project: Path, git_dir: Path, check: CommitCheck | None = None
    ) -> None:
        self.root = root
        self.project = project
        """The spec's repo directory inside the worktree; `paths` pathspecs are relative to it."""
        self.git_dir = git_dir
        """Recorded when the worktree was made; every git call names it (see above)."""
        self._git = git.Git(str(project))
        self._where = (f"--git-dir={git_dir}", f"--work-tree={root}")
        self._no_filters: tuple[str, ...] | None = None
        self.check = check
        """What no commit may take: the sandbox's policy (files over the size cap, a change
        over the worktree cap). What it refuses stays in the tree, uncommitted, on every
        commit."""
        self.refused: Refusal | None = None
        """What the last `commit_all` left out because `check` refused it."""

    def _filters_off(self) -> tuple[str, ...]:
        if self._no_filters is None:
            self._no_filters = _filters_off(self._git, self._where)
        return self._no_filters

    @classmethod
    def create(cls, root: Path, project: Path, check: CommitCheck | None = None) -> Worktree:
        """For a worktree just added: reads its git directory while it is still trustworthy."""
        out = _call(git.Git(str(root)), ("rev-parse", "--absolute-git-dir"))
        return cls(root, project, Path(out.strip()), check)

    def has_changes(self) -> bool:
        status = ("status", "--porcelain", "--untracked-files=all", _IGNORE_NESTED)
        return bool(self._run(*status).strip())

    def commit_all(self, message: str) -> str | None:
        """Commit everything in the worktree (ignored files excepted); None when nothing changed."""
        self.refused = None
        if not self.has_changes():
            return None
        # git add runs `git status` inside every gitlink already in the index to see if it is
        # dirty, and there the nested repository's own config applies: gitlinks are left out
        # (a new nested repository is recorded without being entered; the review refuses it).
        self.refused = self.check(self.root, self.committable()) if self.check else None
        if self.refused is not None and self.refused.everything:
            return None  # the change stays in the tree, uncommitted
        left_out = [*self._gitlinks(), *(self.refused.paths if self.refused else ())]
        pathspecs = [":/", *(f":(exclude,top,literal){path}" for path in left_out)]
        try:
            self._run("add", "--all", "--", *pathspecs)
        except InfrastructureError:
            # Something unaddable (say, a nested repository the agent made with no commit)
            # must not lose the rest of the work: add what can be added.
            with contextlib.suppress(InfrastructureError):
                self._run("add", "--all", "--ignore-errors", "--", *pathspecs)
        if self.refused and not self._run(*_DIFF, "--cached", "--name-only").strip():
            return None  # only refused paths changed: nothing to commit
        self._run(*_IDENTITY, "commit", "--quiet", "--no-verify", "-m", message)
        return self.head()

    def committable(self) -> list[str]:
        """What `git add --all` would take, from the top level: tracked files (also those
        deleted since) and untracked ones not ignored. A nested repository is one entry, not
        entered (a trailing `/` when untracked)."""
        listing = ("ls-files", "-z", "--full-name", "--cached", "--others", "--exclude-standard")
        out = self._run_bytes(*listing, "--", ":/")
        # Names as the file system has them (os.fsdecode): a name that is not UTF-8 is
        # still found on disk, and still counted.
        return sorted({os.fsdecode(name) for name in out.split(b"\0") if name})

    def _gitlinks(self) -> list[str]:
        """Paths (from the top level) of the index's gitlinks."""
        entries = self._run("ls-files", "-z", "--stage", "--", ":/").split("\0")
        return [entry.split("\t", 1)[1] for entry in entries if entry.startswith("160000 ")]

    def head(self) -> str:
        return self._run("rev-parse", "HEAD").strip()

    def tree(self, commit: str = "HEAD") -> str:
        """The hash of `commit`'s tree: two commits with the same tree hold the same files."""
        return self._run("rev-parse", "--verify", "--end-of-options", f"{commit}^{{tree}}").strip()

    def branch(self) -> str:
        """The checked-out branch's short name ('HEAD' when detached)."""
        return self._run("rev-parse", "--abbrev-ref", "HEAD").strip()

    def head_message(self) -> str:
        return self._run("log", "-1", "--format=%B", "HEAD")

    def keep_uncommitted(self, ref_prefix: str) -> str | None:
        """Move uncommitted work aside: commit it, point `<ref_prefix>/<sha>` at that commit,
        and put the branch and tree back where they were. For a node that a crash
        interrupted: it runs again from its start, and what it had half done is kept."""
        before = self.head()
        saved = self.commit_all("harness: interrupted work, kept when the task resumed")
        ref = None
        if saved is not None:  # else ignored files (caches) only: nothing of value
            ref = f"{ref_prefix}/{saved[:12]}"
            self._run("update-ref", ref, saved)
        self.reset_to(before)
        return ref

    def reset_to(self, commit: str = "HEAD") -> None:
        """Make the tree exactly `commit`'s tree (by default the committed tree, so gates judge
        only what was committed), moving the branch there."""
        self._run("reset", "--quiet", "--hard", commit)
        self._run("clean", "-ffdxq", ":/")

    def changed_files(
        self, base: str, pathspecs: list[str] | None = None, *, from_top: bool = False
    ) -> list[str]:
        """Files changed since `base` anywhere in the repository, named from its top level.

        `pathspecs` filter them: git globs relative to the spec's repo directory, or to the
        repository's top level when `from_top`.
        """
        magic = ":(top,glob)" if from_top else ":(glob)"
        specs = [f"{magic}{spec}" for spec in pathspecs or []]
        out = self._run("diff", "--name-only", base, "HEAD", "--", *specs)
        return [line for line in out.splitlines() if line]

    def diffstat(self, base: str) -> str:
        """The whole change's diffstat: also what lies outside the spec's repo directory."""
        return self._run(*_DIFF, "--stat", base, "HEAD", "--", ":/")

    def resolve(self, ref: str) -> str:
        """The commit `ref` names; InfrastructureError when it names none."""
        return self._run("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").strip()

    def read_file(self, commit: str, path: str) -> str | None:
        """A file's text in `commit` (`path` from the top level), or None when it has none."""
        return _blob(self._git, self._where, commit, path)

    def file_changes(self, base: str, head: str) -> list[tuple[str | None, str | None]]:
        """Each file changed from `base` to `head`, renames found, as (its path in base, its
        path in head), paths from the top level; None on the side where it does not exist."""
        out = self._run(*_DIFF, "-M", "--name-status", "-z", base, head)
        fields, changes = out.split("\0"), []
        while len(fields) > 1 and fields[0]:
            status, old = fields[0][0], fields[1]
            new = fields[2] if status in "RC" else old
            fields = fields[3:] if status in "RC" else fields[2:]
            changes.append((None if status == "A" else old, None if status == "D" else new))
        return changes

    def entries_added(self, base: str, head: str) -> list[tuple[str, str, str]]:
        """Each tree entry that `head` adds or changes since `base`, as (its mode, e.g. 160000
        for a gitlink and 120000 for a symlink; its object id; its path from the top level).
        Read from the two trees only: no nested repository or link is entered or followed."""
        out = self._run("diff-tree", "-r", "-z", "--raw", "--no-renames", base, head)
        fields, entries = out.split("\0"), []
        while len(fields) > 1 and fields[0].startswith(":"):
            _, new_mode, _, new_id, status = fields[0][1:].split(" ")
            if status != "D":
                entries.append((new_mode, new_id, fields[1]))
            fields = fields[2:]
        return entries

    def read_blob(self, object_id: str) -> bytes:
        """An object's raw bytes (a symlink's target is its blob), not decoded."""
        return self._run_bytes("cat-file", "blob", object_id)

    def changed_lines(self, base: str, head: str, paths: list[str]) -> tuple[Lines, Lines]:
        """In `paths` (from the top level, taken literally): (the lines removed, with their
        numbers in base; the lines added, with their numbers in head)."""
        specs = [f":(top,literal){path}" for path in paths]
        removed: Lines = []
        added: Lines = []
        old_no = new_no = 0
        in_hunk = False
        for line in self._run(*_DIFF, "-M", "-U0", base, head, "--", *specs).split("\n"):
            if line.startswith("diff --git"):
                in_hunk = False
            elif hunk := _HUNK.match(line):
                in_hunk, old_no, new_no = True, int(hunk[1]), int(hunk[2])
            elif in_hunk and line.startswith("-"):
                removed.append((old_no, line[1:]))
                old_no += 1
            elif in_hunk and line.startswith("+"):
                added.append((new_no, line[1:]))
                new_no += 1
        return removed, added

    def _run(self, *args: str) -> str:
        return self._run_bytes(*args).decode("utf-8", errors="replace")

    def _run_bytes(self, *args: str) -> bytes:
        return _call_bytes(self._git, args, (*self._filters_off(), *self._where))


_HUNK = re.compile(r"@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _filters_off(runner: git.Git, where: tuple[str, ...]) -> tuple[str, ...]:
    """Options that blank every filter driver the configuration defines. The agent's
    .gitattributes choose which files a driver runs on, and a driver's command may be a path
    relative to the work tree, which the agent writes (as `./fsmonitor.sh` above); git has no
    switch for "no filters", so each configured driver is named and emptied."""
    try:
        listing = ("config", "--name-only", "--get-regexp", r"^filter\.")
        names = _call(runner, listing, where).split()
    except InfrastructureError:  # exit 1: no filter configured
        names = []
    drivers = sorted({name[len("filter.") :].rpartition(".")[0] for name in names})
    settings = ("clean=", "smudge=", "process=", "required=false")
    return tuple(
        option
        for driver in drivers
        for setting in settings
        for option in ("-c", f"filter.{driver}.{setting}")
    )


def _blob(runner: git.Git, where: tuple[str, ...], commit: str, path: str) -> str | None:
    try:
        return _call(runner, ("cat-file", "blob", f"{commit}:{path}"), where)
    except InfrastructureError:
        return None


def _call(runner: git.Git, args: tuple[str, ...], where: tuple[str, ...] = ()) -> str:
    """git `args` in the runner's directory (or at `where`: --git-dir and --work-tree), with
    the options above; its stdout, undecodable bytes replaced. InfrastructureError, naming the
    command without them, when git fails."""
    return _call_bytes(runner, args, where).decode("utf-8", errors="replace")


def _call_bytes(runner: git.Git, args: tuple[str, ...], where: tuple[str, ...] = ()) -> bytes:
    """As `_call`, its stdout as bytes."""
    try:
        out = runner.execute(
            ["git", *_NO_PROGRAMS, *where, *args],
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
    except git.GitCommandError as exc:
        raise InfrastructureError(f"git {' '.join(args)} failed: {exc.stderr.strip()}") from None
    assert isinstance(out, bytes)  # stdout_as_string=False
    return out


class BranchReader:
    """Read-only views of a repository's task branches, for reports: every branch head under a
    prefix in one call, then each branch's commits and its diff with its stat. Diffs are made as
    Worktree's are (no external diff, no textconv, every filter driver blanked), and `log` only
    prints formats: nothing the agent committed chooses a program to run."""

    def __init__(self, toplevel: Path) -> None:
        self._git = git.Git(str(toplevel))
        self._no_filters: tuple[str, ...] | None = None

    def heads(self, prefix: str) -> dict[str, str]:
        """Branch name → commit, for the branches under `prefix` (e.g. harness/<run-id>/)."""
        out = _call(
            self._git,
            ("for-each-ref", "--format=%(refname:short)%00%(objectname)", f"refs/heads/{prefix}"),
        )
        return dict(line.split("\0", 1) for line in out.splitlines() if "\0" in line)

    def commits(self, base: str, head: str) -> list[tuple[str, str]]:
        """(sha, subject) of each commit from `base` to `head`, oldest first."""
        out = _call(
            self._git,
            ("log", "--no-show-signature", "--reverse", "--format=%H%x1f%s", f"{base}..{head}"),
        )
        return [
            (sha, subject)
            for sha, _, subject in (line.partition("\x1f") for line in out.splitlines())
        ]

    def diff_with_stat(self, base: str, head: str) -> tuple[str, str]:
        """The change from `base` to `head`: its stat and its diff."""
        if self._no_filters is None:
            self._no_filters = _filters_off(self._git, ())
        out = _call(self._git, (*_DIFF, "--patch-with-stat", base, head), self._no_filters)
        stat, marker, diff = out.partition("\ndiff --git ")
        return (stat.strip(), f"diff --git {diff}") if marker else (stat.strip(), "")


class RemoteRejected(Exception):
    """The remote refused a push (e.g. branch protection); the message is its reason."""


class Remote:
    """A remote of the user's repository, read and pushed to with a token that never leaves
    this process: it reaches git only as an HTTP header in the child's environment
    (GIT_CONFIG_COUNT/KEY/VALUE), scoped to the remote's URL, so it is on no command line, in
    no .git/config and in no remote URL."""

    def __init__(
        self,
        toplevel: Path,
        name: str,
        *,
        header_scope: str | None = None,
        token: Callable[[], str] | None = None,
        user: str = "x-access-token",
    ) -> None:
        self.toplevel = toplevel
        self.name = name
        self._git = git.Git(str(toplevel))
        self._scope = header_scope
        """The URL prefix the header is sent to (e.g. https://github.com/); None: no header."""
        self._token = token
        self._user = user
        """The Basic auth user the forge expects with a token (GitHub: x-access-token;
        GitLab: oauth2)."""

    def url(self) -> str:
        return _call(self._git, ("remote", "get-url", self.name)).strip()

    def heads(self) -> tuple[dict[str, str], str | None]:
        """Branch name → commit, as the remote has them now; and its default branch (what its
        HEAD points at), if it says."""
        out = self._remote("ls-remote", "--symref", self.name, "HEAD", "refs/heads/*")
        heads, default = {}, None
        for line in out.splitlines():
            left, _, ref = line.partition("\t")
            if left.startswith("ref: ") and ref == "HEAD":
                default = left[5:].removeprefix("refs/heads/")
            elif ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = left
        return heads, default

    def branch_commit(self, branch: str) -> str | None:
        """The local branch's commit, or None when there is no such branch."""
        try:
            out = _call(self._git, ("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"))
        except InfrastructureError:
            return None
        return out.strip()

    def diff(self, base: str, head: str) -> str:
        """The change from `base` to `head`, as text (no external diff, no textconv, no
        filter drivers: the agent's .gitattributes choose nothing here)."""
        return _call(self._git, (*_DIFF, base, head), _filters_off(self._git, ()))

    def has_commit(self, sha: str) -> bool:
        try:
            _call(self._git, ("cat-file", "-e", f"{sha}^{{commit}}"))
        except InfrastructureError:
            return False
        return True

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            _call(self._git, ("merge-base", "--is-ancestor", older, newer))
        except InfrastructureError:
            return False
        return True

    def push(self, sha: str, branch: str, *, expected: str | None) -> None:
        """Set the remote's `branch` to exactly `sha` (no rebase, no squash), leased: only if
        the remote still has `expected` there (None: only if it has no such branch).
        RemoteRejected with the remote's reason when it refuses."""
        ref = f"refs/heads/{branch}"
        lease = f"--force-with-lease={ref}:{expected or ''}"
        try:
            self._remote("push", "--porcelain", "--no-verify", lease, self.name, f"{sha}:{ref}")
        except _PushFailed as exc:
            raise RemoteRejected(exc.reason) from None

    def _remote(self, *args: str) -> str:
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
        if self._scope is not None and self._token is not None:
            basic = base64.b64encode(f"{self._user}:{self._token()}".encode()).decode()
            env |= {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{self._scope}.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        try:
            out = self._git.execute(
                ["git", *_NO_PROGRAMS, *args], env=env, with_extended_output=True
            )
        except git.GitCommandError as exc:
            # The porcelain's rejected refs, with what the remote said (e.g. GitHub's GH006).
            rejected = [
                line.split("\t")[-1] for line in str(exc.stdout).splitlines() if line[:1] == "!"
            ]
            # (GitPython quotes stderr as "  stderr: '…'": the remote's lines are found inside.)
            said = re.findall(r"remote: *(\S[^'\n]*)", str(exc.stderr))
            stderr = " ".join(str(exc.stderr).split())
            reason = "; ".join(rejected + said[:3]) or stderr or f"git {args[0]} failed"
            raise _PushFailed(reason) from None
        return str(out[1])


class _PushFailed(InfrastructureError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
