"""A pool of ready sandboxes: per (repository, base commit), worktrees checked out detached at
the base in a background thread, so a new task's sandbox is claimed with a few constant-time
git calls instead of a checkout that grows with the repository.

Every entry is a store record first (kind `pool`, owned by this process, its lease renewed
while the pool lives), made before its worktree exists, so `harness gc` reaps the entries of a
process that died (its lease lapsed or its pid gone) by the path every environment takes
(lifecycle.teardown → remove_worktree), and nothing is left behind.

Nothing ever runs in an entry: it is exactly what git checked out. A claim (`claim`, from
TaskSandboxes for a new task at its base) takes one entry (one lock: no two tasks get the
same), checks it is intact (its directory, its recorded git dir, its HEAD at the base), and
then, in this order:

    git worktree move <entry> <task worktree>   the entry record still names the old path:
                                                gc only prunes; the task's record owns the tree
    git update-ref refs/heads/<branch> <base>   a crash from here on: the task resumes on its
    git symbolic-ref HEAD (recorded git dir)    branch (TaskSandboxes re-makes the worktree)
    the entry record → deleted

An entry is only handed out for exactly its base. A claim on a repository with another base
makes that repository's other pools stale (its base moved), unless the run still has tasks to
start on them; they are dropped. A repository that disappeared, or a base that no longer
exists, drops its entries with one warning, and its tasks get fresh worktrees. Entries older
than `ttl_s` are dropped and made again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness import failpoints
from harness.errors import InfrastructureError
from harness.git import GitRepository
from harness.sandbox.limits import SandboxPoolConfig
from harness.store import EnvRecord, Store, owner_is_gone

KIND = "pool"
RUN_SUFFIX = ":pool"
"""Entries are recorded as run `<run id>:pool`'s (no run id has a colon)."""
SPEC_ID = ":pool"
"""The spec id of every entry's record: no spec id has a colon, so no task's lookup finds it."""

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(repository toplevel, base commit)."""


@dataclass(frozen=True)
class Claimed:
    """A claimed entry, now the task's worktree: its repository (its git calls warmed up by
    the refills) and the worktree's git dir, recorded when git made it."""

    repository: GitRepository
    git_dir: Path


@dataclass
class _Entry:
    env_id: str
    toplevel: str
    path: Path
    git_dir: Path
    made_at: float = field(default_factory=time.monotonic)


@dataclass
class _Pool:
    """The entries of one (repository, base)."""

    demand: int | None
    """Tasks still to start on this base (None: unknown, as for `harness serve`)."""
    ready: list[_Entry] = field(default_factory=list)
    making: int = 0
    dead: str | None = None
    """Why no entry is made any more (the repository or the base is gone)."""


class SandboxPool:
    """Ready worktrees per (repository, base), under `home`, recorded in `store` under
    `<run_id>:pool` (a run's own environments stay its tasks'), owned by `owner`. `warm`
    starts the background thread; `close` stops it and removes every entry."""

    def __init__(
        self,
        store: Store,
        home: Path,
        run_id: str,
        *,
        owner: str,
        lease_s: float,
        config: SandboxPoolConfig,
        keep_unknown: bool = False,
    ) -> None:
        self.store, self.home, self.run_id = store, home, f"{run_id}{RUN_SUFFIX}"
        self.owner, self.lease_s, self.config = owner, lease_s, config
        self.keep_unknown = keep_unknown
        """A claim on a (repository, base) no one warmed starts a pool for it (serve)."""
        self._pools: dict[Key, _Pool] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._repos: dict[str, GitRepository] = {}

    def _repository(self, toplevel: str) -> GitRepository:
        """One per repository: it keeps what its first git calls read (filters, common dir)."""
        with self._cv:
            return self._repos.setdefault(toplevel, GitRepository(Path(toplevel)))

    # --- the run's side --------------------------------------------------------------------

    def warm(self, wanted: Iterable[Key]) -> None:
        """Keep entries ready for these (repository, base) pairs, one pair per task to come."""
        if self.config.size == 0:
            return
        with self._cv:
            for key, tasks in Counter(wanted).items():
                pool = self._pools.setdefault(key, _Pool(demand=None if self.keep_unknown else 0))
                if pool.demand is not None:
                    pool.demand += tasks
            self._start()
            self._cv.notify_all()

    def close(self) -> None:
        """Stop refilling and remove every entry (the run's end)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cv:
            entries = [entry for pool in self._pools.values() for entry in pool.ready]
            for pool in self._pools.values():
                pool.ready.clear()
        for entry in entries:
            self._drop(entry)
        if thread is not None:
            self._reap_orphans()  # another worker's on this run, lapsed since (it froze, say)
        with contextlib.suppress(OSError):  # still holds another worker's entries
            self.home.rmdir()

    def claim(self, toplevel: str, base: str, branch: str, root: Path) -> Claimed | None:
        """A ready entry of (toplevel, base) moved to `root` and put on a new `branch` at the
        base. None when no entry is ready (or the one taken was not intact): the caller makes
        a fresh worktree, and the pool refills behind it (once the claim is done, so a refill's
        checkout does not compete with it)."""
        entry = self._take((toplevel, base))
        try:
            return None if entry is None else self._claim(entry, base, branch, root)
        finally:
            with self._cv:
                self._cv.notify_all()

    def _claim(self, entry: _Entry, base: str, branch: str, root: Path) -> Claimed | None:
        repository = self._repository(entry.toplevel)
        # Under its teardown lock: gc may not reap it meanwhile (a deleted one is not locked).
        if not self.store.lock_teardown(entry.env_id, self.owner, self.lease_s):
            return None
        try:
            why = _not_intact(repository, entry, base)
            if why is not None:
                log.warning("sandbox pool: entry %s dropped: %s", entry.path, why)
                self._drop(entry)
                return None
            created = False
            try:
                root.parent.mkdir(parents=True, exist_ok=True)
                repository.move_worktree(entry.path, root)
                failpoints.hit("pool.claim.moved")
                repository.create_branch(branch, base)
                created = True
                repository.check_out_branch(entry.git_dir, branch)
            except InfrastructureError as exc:
                log.warning(
                    "sandbox pool: claiming %s failed, a fresh worktree is made: %s",
                    entry.path,
                    exc,
                )
                self._drop(entry)
                _undo_claim(repository, root, branch if created else None)
                return None
            self.store.transition(entry.env_id, "tearing_down")
            done = {"claimed_as": str(root)}
            self.store.transition(entry.env_id, "deleted", artifacts=done, expires_at=time.time())
            return Claimed(repository, entry.git_dir)
        finally:
            self.store.unlock_teardown(entry.env_id, self.owner)

    def _take(self, key: Key) -> _Entry | None:
        with self._cv:
            if self._closed or self.config.size == 0:
                return None
            pool = self._pools.get(key)
            if pool is None and self.keep_unknown:
                pool = self._pools[key] = _Pool(demand=None)
                self._start()
            if pool is None:
                return None
            if pool.demand:
                pool.demand -= 1
            stale = [
                other
                for other in self._pools
                if other[0] == key[0] and other != key and not self._pools[other].demand
            ]
            dropped = [entry for other in stale for entry in self._pools.pop(other).ready]
            expired = self._expired(pool)
            entry = pool.ready.pop(0) if pool.ready else None
        for old in [*dropped, *expired]:
            self._drop(old)
        if dropped:
            log.warning(
                "sandbox pool: %s: base moved to %s; %d stale entries dropped",
                key[0],
                key[1][:12],
                len(dropped),
            )
        return entry

    # --- the background thread -------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._refill, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _refill(self) -> None:
        # Refills are background work: this thread, and the git processes it starts (they
        # inherit its nice value), yield the CPU to the tasks' own commands.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        self._reap_orphans()
        renewed = time.monotonic()
        while True:
            with self._cv:
                if self._closed:
                    return
                key = self._wanted()
                if key is None:
                    self._cv.wait(self.lease_s / 3)
                else:
                    self._pools[key].making += 1
                entries = [entry for pool in self._pools.values() for entry in pool.ready]
                expired = [entry for pool in self._pools.values() for entry in self._expired(pool)]
            for entry in expired:
                self._drop(entry)
            if time.monotonic() - renewed > self.lease_s / 3:
                for entry in entries:
                    self.store.renew_env_lease(entry.env_id, self.owner, self.lease_s)
                self._reap_orphans()
                renewed = time.monotonic()
            if key is not None:
                try:
                    self._make(key)
                except Exception:  # the store, say: no more entries, never a dead thread
                    log.exception("sandbox pool: making an entry failed; no more entries")
                    with self._cv:
                        self._pools[key].making -= 1
                        self._pools[key].dead = "making an entry failed"

    def _teardown(
        self, env: EnvRecord, still_due: Callable[[EnvRecord], bool] | None = None
    ) -> None:
        """lifecycle.teardown: the path every environment takes, also in gc."""
        from harness.sandbox.lifecycle import teardown  # lifecycle imports this module

        owner, lease_s = self.owner, self.lease_s
        teardown(self.store, env, owner=owner, lease_s=lease_s, retain_s=0, still_due=still_due)

    def _reap_orphans(self) -> None:
        """Entries of this run that another worker left (a resumed run's pool finds its crashed
        predecessor's), torn down by gc's rules (owner gone, lease lapsed, expired), so none
        waits for the next gc. At the start, with each lease renewal, and at close."""
        for env in self.store.envs(run_id=self.run_id, live=True):
            if env.kind == KIND and env.owner != self.owner and _orphaned(env):
                with contextlib.suppress(InfrastructureError, OSError):
                    self._teardown(env, still_due=_orphaned)

    def _wanted(self) -> Key | None:
        """A (repository, base) with fewer entries ready or being made than it wants."""
        for key, pool in self._pools.items():
            target = self.config.size if pool.demand is None else min(self.config.size, pool.demand)
            if pool.dead is None and len(pool.ready) + pool.making < target:
                return key
        return None

    def _expired(self, pool: _Pool) -> list[_Entry]:
        """Takes the entries older than ttl_s out of `pool` (under the lock), to be dropped."""
        cutoff = time.monotonic() - self.config.ttl_s
        expired = [entry for entry in pool.ready if entry.made_at < cutoff]
        pool.ready[:] = [entry for entry in pool.ready if entry.made_at >= cutoff]
        return expired

    def _make(self, key: Key) -> None:
        toplevel, base = key
        name = uuid.uuid4().hex[:12]
        path = self.home / name
        now = time.time()
        env = self.store.allocate_env(
            EnvRecord(
                env_id=f"{self.run_id}/{name}",
                run_id=self.run_id,
                spec_id=SPEC_ID,
                kind=KIND,
                config={"base": base},
                # gc's backstop: past it the entry is reaped even while its owner lives.
                expires_at=now + self.config.ttl_s + self.lease_s,
                owner=self.owner,
                lease_expires_at=now + self.lease_s,
            )
        )
        artifacts = {"repo": toplevel, "worktree": str(path), "base": base}
        self.store.transition(env.env_id, "provisioning", artifacts=artifacts)
        entry: _Entry | None = None
        try:
            failpoints.hit("pool.refill")
            repository = self._repository(toplevel)
            if not Path(toplevel).is_dir() or not repository.has_commit(base):
                raise InfrastructureError(f"{toplevel}: no such repository, or no commit {base}")
            path.parent.mkdir(parents=True, exist_ok=True)
            git_dir = repository.add_worktree(path, None, base)
            failpoints.hit("pool.refill.made")
            self.store.transition(env.env_id, "ready", artifacts={"git_dir": str(git_dir)})
            repository.common_dir()  # read once here, not during a claim
            entry = _Entry(env.env_id, toplevel, path, git_dir)
        except InfrastructureError as exc:
            self._drop(_Entry(env.env_id, toplevel, path, path))
            with self._cv:
                pool = self._pools.get(key)
                if pool is not None and pool.dead is None:
                    pool.dead = str(exc)
                    log.warning(
                        "sandbox pool: %s at %s: no more entries: %s", toplevel, base[:12], exc
                    )
        with self._cv:
            pool = self._pools.get(key)
            if pool is not None:
                pool.making -= 1
            if entry is not None and pool is not None and not self._closed:
                pool.ready.append(entry)
                entry = None
            self._cv.notify_all()
        if entry is not None:  # its pool went stale, or closed, while it was made
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        """Tear the entry down as gc would: its worktree removed, its record deleted. (Also
        during a claim, which holds the entry's teardown lock: the lock is re-entrant.)"""
        env = self.store.get_env(entry.env_id)
        if env is None or env.status == "deleted":
            return
        with contextlib.suppress(InfrastructureError, OSError):
            self._teardown(env)


def _orphaned(env: EnvRecord) -> bool:
    """gc's rule (harness.run.gc): expired, its owner's lease lapsed, or its owner gone."""
    now = time.time()
    lapsed = env.lease_expires_at is not None and env.lease_expires_at <= now
    return env.expires_at <= now or lapsed or owner_is_gone(env.owner)


def _not_intact(repository: GitRepository, entry: _Entry, base: str) -> str | None:
    """Why the entry cannot be handed out, or None. Cheap reads of git's own files only."""
    try:
        if not (entry.path / ".git").is_file():
            return "its worktree is gone"
        recorded = (entry.git_dir / "gitdir").read_text(encoding="utf-8").strip()
        if Path(recorded) != entry.path / ".git":
            return f"its git dir {entry.git_dir} records another worktree"
        if (entry.git_dir / "HEAD").read_text(encoding="utf-8").strip() != base:
            return f"its HEAD is not the base {base[:12]}"
    except OSError as exc:
        return f"its git dir is unreadable ({exc.strerror})"
    if not repository.toplevel.is_dir():
        return "its repository is gone"
    return None


def _undo_claim(repository: GitRepository, root: Path, branch: str | None) -> None:
    """A claim that failed half-way: the task's worktree and the branch it made (at the base,
    nothing on it) go, so the fresh worktree made next starts clean."""
    with contextlib.suppress(InfrastructureError, OSError):
        repository.remove_worktree(root)
    if branch is not None:
        repository.delete_ref(f"refs/heads/{branch}")
