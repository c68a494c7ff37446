"""The experiment journal: a crash-safe SQLite record of every trial (``journal.sqlite``).

One row per trial (an evaluation of one decision vector): its batch, parameters,
status (``pending`` -> ``running`` -> ``completed`` | ``failed``), metrics,
objectives, error text and timings. Every change is its own transaction, written
before and after each evaluation, in WAL mode with ``synchronous=FULL``, so a
process killed at any instant leaves a consistent journal: completed trials are
never lost, and a trial left ``pending`` or ``running`` is known to need a re-run.

One process writes a journal at a time: a writable :class:`Journal` holds a
:class:`RunLock` (an ``fcntl.flock`` on ``<journal>.lock``, released by the kernel
when its holder dies, so a killed run can be resumed at once); a second writer gets
a :class:`RunInUseError` naming the holder's process id, before it touches the journal.
Reading commands open the journal with ``read_only=True``: no lock, and nothing is
created in the run folder, which may be read-only.

Written with the standard library's ``sqlite3`` because Ax's SQL store needs an
extra that pins an old SQLAlchemy (``shared/notes``) and no other library offers a
transactional per-trial journal without a server.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Literal
from urllib.parse import quote

from bambo.errors import BamboError, ConfigError

Status = Literal["pending", "running", "completed", "failed"]

# A run folder (bambo run / resume / report / export) holds these two files.
JOURNAL = "journal.sqlite"
CONFIG = "config.yaml"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    x TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    metrics TEXT,
    objectives TEXT,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    fidelity REAL NOT NULL DEFAULT 1.0,
    cost REAL NOT NULL DEFAULT 1.0,
    parent INTEGER
);
CREATE TABLE IF NOT EXISTS batch_states (batch INTEGER PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS promotions (batch INTEGER PRIMARY KEY, decided REAL NOT NULL);
"""

# Columns added after the first journals were written: (name, definition, value for older rows).
_ADDED_COLUMNS = (
    ("fidelity", "REAL NOT NULL DEFAULT 1.0", "1.0"),
    ("cost", "REAL NOT NULL DEFAULT 1.0", "1.0"),
    ("parent", "INTEGER", "NULL"),
)
_BASE_COLUMNS = "id, batch, x, status, metrics, objectives, error, started, finished"


class JournalError(BamboError):
    """The journal is missing, corrupt, or used out of order."""


class RunInUseError(ConfigError):
    """Another live process is writing the run (it holds the run's :class:`RunLock`)."""


class RunLock:
    """The one-writer lock of a journal: an exclusive ``fcntl.flock`` on ``<journal>.lock``.

    Non-blocking: a lock held by another process raises :class:`RunInUseError` at
    once. The kernel releases it when the holding process ends, however it ends
    (a SIGKILLed run leaves no stale lock). Within one process it is re-entrant
    (``bambo resume`` takes it before loading the models, then the journal takes it
    again). The holder writes its process id into the file, for the message. On a
    platform without ``fcntl`` it locks nothing.

    Args:
        journal_path: The journal file; the lock is ``<journal_path>.lock`` beside it
            (its folder is created if missing).
    """

    _held: ClassVar[dict[str, list[Any]]] = {}  # lock path -> [open handle, count] in this process

    def __init__(self, journal_path: Path | str) -> None:
        self.path = Path(f"{journal_path}.lock")
        self._acquired = False

    def acquire(self) -> RunLock:
        """Take the lock; returns ``self``.

        Raises:
            RunInUseError: Another process holds it.
        """
        if self._acquired:
            return self
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one writer is the user's responsibility
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key][1] += 1
            self._acquired = True
            return self
        handle: IO[str] = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            folder = self.path.parent
            raise RunInUseError(
                f"run folder {folder} is in use by process {holder} (it holds {self.path.name}); wait for it or kill it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._held[key] = [handle, 1]
        self._acquired = True
        return self

    def release(self) -> None:
        """Release the lock (the last release in this process unlocks the file)."""
        if not self._acquired:
            return
        self._acquired = False
        key = str(self.path.resolve())
        entry = self._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[key]
            entry[0].close()  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class Trial:
    """One journaled evaluation.

    Attributes:
        id: 0-based position in the run.
        batch: Index of the batch it was proposed in.
        x: The decision vector.
        status: ``pending``, ``running``, ``completed`` or ``failed``.
        metrics: The evaluator's named metrics (completed trials).
        objectives: Objectives in maximisation form (completed trials).
        error: Error text (failed trials).
        started: Unix time the evaluation started.
        finished: Unix time it ended.
        fidelity: Share of the evaluation data used, in (0, 1] (:mod:`bambo.fidelity`).
        cost: What the evaluation costs, in full evaluations (its fidelity).
        parent: For a candidate promoted to a higher fidelity, the trial that evaluated it first.
    """

    id: int
    batch: int
    x: list[float]
    status: Status
    metrics: dict[str, float] | None
    objectives: list[float] | None
    error: str | None
    started: float | None
    finished: float | None
    fidelity: float = 1.0
    cost: float = 1.0
    parent: int | None = None

    @property
    def ended(self) -> bool:
        """Whether the evaluation ended (``completed`` or ``failed``)."""
        return self.status in ("completed", "failed")

    @property
    def seconds(self) -> float | None:
        """Duration of the evaluation, if it ended."""
        return None if self.started is None or self.finished is None else self.finished - self.started


class Journal:
    """A run's journal in ``path`` (created if missing).

    A journal on a file is opened for writing under its :class:`RunLock` (one
    writing process at a time), held until :meth:`close`.

    Args:
        path: The SQLite file; ``None`` keeps the journal in memory (a search that
            needs no resume, e.g. :func:`bambo.optimize` without a journal path).
        create: Create the file if it does not exist (else raise :class:`JournalError`).
        read_only: Open an existing journal for reading only, without the lock and
            without creating any file beside it (a run folder may be read-only, or
            in use by its run). A journal whose last writer closed it is opened as
            immutable; one with a write-ahead log (a live or killed writer) is read
            through it, or, where SQLite cannot do that in place (a read-only folder
            without the log's index), from a private copy of the two files.

    Raises:
        JournalError: No journal at ``path`` (``create=False`` or ``read_only``), or it
            cannot be read.
        RunInUseError: Another process is writing this journal.
    """

    def __init__(self, path: Path | str | None = None, create: bool = True, read_only: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.read_only = read_only and self.path is not None
        self._lock: RunLock | None = None
        self._copy: Path | None = None
        if self.path is None:
            self._conn = sqlite3.connect(":memory:", isolation_level=None)
        elif self.read_only:
            if not self.path.is_file():
                raise JournalError(f"no journal at {self.path}")
            self._conn = self._connect_read_only(self.path)
            self._select = f"SELECT {_BASE_COLUMNS}, {self._added_columns()} FROM trials"
            return
        else:
            if not create and not self.path.exists():
                raise JournalError(f"no journal at {self.path}")
            self._lock = RunLock(self.path).acquire()  # creates the folder
            try:
                self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            except BaseException:
                self._lock.release()
                raise
        self._conn.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        self._select = f"SELECT {_BASE_COLUMNS}, {self._added_columns()} FROM trials"

    def _added_columns(self) -> str:
        """The newer columns to select: added to an older journal opened for writing, read as their
        defaults from one opened read-only."""
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(trials)").fetchall()}
        selected = []
        for name, definition, default in _ADDED_COLUMNS:
            if name not in present and not self.read_only:
                self._conn.execute(f"ALTER TABLE trials ADD COLUMN {name} {definition}")
                present.add(name)
            selected.append(name if name in present else f"{default} AS {name}")
        return ", ".join(selected)

    def _connect_read_only(self, path: Path) -> sqlite3.Connection:
        """A read-only connection that creates nothing beside ``path`` (see the class docstring)."""
        uri = "file:" + quote(str(path.resolve()))
        wal = Path(f"{path}-wal")
        try:
            if not wal.exists():  # fully checkpointed: nothing to read but the file itself
                conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30.0)
            conn.execute("SELECT COUNT(*) FROM trials").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            if not wal.exists():
                raise JournalError(f"cannot read the journal {path}: {exc}") from None
        # e.g. a read-only folder holding a killed run's log but not its index: read a private copy
        self._copy = Path(tempfile.mkdtemp(prefix="bambo-journal-"))
        shutil.copyfile(path, self._copy / path.name)
        shutil.copyfile(wal, self._copy / wal.name)
        try:
            conn = sqlite3.connect(self._copy / path.name, isolation_level=None)
            conn.execute("SELECT COUNT(*) FROM trials").fetchone()
        except sqlite3.Error as exc:
            shutil.rmtree(self._copy, ignore_errors=True)
            raise JournalError(f"cannot read the journal {path}: {exc}") from None
        return conn

    def close(self) -> None:
        """Close the connection and release the lock."""
        self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise JournalError(f"the journal {self.path} was opened read-only")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- metadata ------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (``default`` if absent)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- trials --------------------------------------------------------------------------------

    def add_batch(
        self, X: Sequence[Sequence[float]], state: Any = None, fidelity: float | Sequence[float] = 1.0
    ) -> list[Trial]:
        """Record a proposed batch as ``pending`` trials, in one transaction; returns them.

        Args:
            X: The batch's decision vectors.
            state: What the strategy needs to continue exactly after this batch on resume
                (:meth:`bambo.strategies.Strategy.checkpoint`), JSON-serialisable; stored in
                the same transaction as the trials. ``None`` stores nothing.
            fidelity: The fidelity the trials are evaluated at (also their cost): one for all, or one per row.
        """
        with self._transaction() as conn:
            (next_id,) = conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM trials").fetchone()
            (batch,) = conn.execute("SELECT COALESCE(MAX(batch) + 1, 0) FROM trials").fetchone()
            ids = self._insert(conn, next_id, batch, X, fidelity, [None] * len(X))
            if state is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO batch_states (batch, state) VALUES (?, ?)", (batch, json.dumps(state))
                )
        return [self.trial(i) for i in ids]

    def promote(self, batch: int, parents: Sequence[Trial], fidelity: float = 1.0) -> list[Trial]:
        """Record a batch's promotion decision and the promoted candidates' new trials, in one transaction.

        Args:
            batch: The batch whose candidates were evaluated at a low fidelity.
            parents: The low-fidelity trials promoted (possibly none: the decision is recorded).
            fidelity: The fidelity of the new trials.

        Returns:
            The new ``pending`` trials, in the order of ``parents``.

        Raises:
            JournalError: The batch's promotion was already recorded.
        """
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM promotions WHERE batch = ?", (batch,)).fetchone() is not None:
                raise JournalError(f"batch {batch} was already promoted")
            (next_id,) = conn.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM trials").fetchone()
            xs = [t.x for t in parents]
            ids = self._insert(conn, next_id, batch, xs, fidelity, [t.id for t in parents])
            conn.execute("INSERT INTO promotions (batch, decided) VALUES (?, ?)", (batch, time.time()))
        return [self.trial(i) for i in ids]

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        first_id: int,
        batch: int,
        X: Sequence[Sequence[float]],
        fidelity: float | Sequence[float],
        parents: Sequence[int | None],
    ) -> list[int]:
        now = time.time()
        ids = list(range(first_id, first_id + len(X)))
        fidelities = [float(fidelity)] * len(X) if isinstance(fidelity, int | float) else [float(f) for f in fidelity]
        conn.executemany(
            "INSERT INTO trials (id, batch, x, status, created, fidelity, cost, parent) "
            "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
            [
                (i, batch, json.dumps([float(v) for v in x]), now, f, f, parent)
                for i, x, f, parent in zip(ids, X, fidelities, parents, strict=True)
            ],
        )
        return ids

    def promoted_batches(self) -> set[int]:
        """The batches whose promotion decision is recorded (:meth:`promote`)."""
        try:
            return {row[0] for row in self._conn.execute("SELECT batch FROM promotions").fetchall()}
        except sqlite3.OperationalError:  # an older journal opened read-only: no such table
            return set()

    def batch_states(self) -> dict[int, Any]:
        """The strategy states stored with the batches (:meth:`add_batch`), by batch index.

        A journal written before states were kept has none (an empty dict).
        """
        try:
            rows = self._conn.execute("SELECT batch, state FROM batch_states").fetchall()
        except sqlite3.OperationalError:  # an older journal opened read-only: no such table
            return {}
        return {batch: json.loads(state) for batch, state in rows}

    def mark_running(self, trial_id: int) -> Trial:
        """Record that the evaluation of ``trial_id`` starts now (before it runs); returns the trial."""
        return self._update(
            trial_id, "status = 'running', started = ?, error = NULL", (time.time(),), ("pending", "running")
        )

    def complete(self, trial_id: int, objectives: Sequence[float], metrics: dict[str, float]) -> Trial:
        """Record a finished evaluation with its objectives (max form) and metrics; returns the trial."""
        values = (json.dumps([float(v) for v in objectives]), json.dumps(metrics), time.time())
        return self._update(
            trial_id, "status = 'completed', objectives = ?, metrics = ?, finished = ?", values, ("pending", "running")
        )

    def fail(self, trial_id: int, error: str) -> Trial:
        """Record a failed evaluation with its error text; returns the trial."""
        return self._update(
            trial_id, "status = 'failed', error = ?, finished = ?", (error, time.time()), ("pending", "running")
        )

    def _update(self, trial_id: int, assignments: str, values: tuple, allowed_from: tuple[str, ...]) -> Trial:
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM trials WHERE id = ?", (trial_id,)).fetchone()
            if row is None:
                raise JournalError(f"no trial {trial_id} in {self.path}")
            if row[0] not in allowed_from:
                raise JournalError(f"trial {trial_id} is {row[0]}; expected one of {list(allowed_from)}")
            conn.execute(f"UPDATE trials SET {assignments} WHERE id = ?", (*values, trial_id))  # noqa: S608
        return self.trial(trial_id)

    def trial(self, trial_id: int) -> Trial:
        """One trial by id.

        Raises:
            JournalError: No such trial.
        """
        row = self._conn.execute(f"{self._select} WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise JournalError(f"no trial {trial_id} in {self.path or 'the in-memory journal'}")
        return _trial(row)

    def trials(self) -> list[Trial]:
        """Every trial in id order."""
        return [_trial(r) for r in self._conn.execute(f"{self._select} ORDER BY id").fetchall()]

    def batches(self) -> list[list[Trial]]:
        """Trials grouped by batch, in order."""
        grouped: dict[int, list[Trial]] = {}
        for trial in self.trials():
            grouped.setdefault(trial.batch, []).append(trial)
        return [grouped[b] for b in sorted(grouped)]

    def counts(self) -> dict[str, int]:
        """Number of trials per status."""
        rows = self._conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall()
        return {status: 0 for status in ("pending", "running", "completed", "failed")} | dict(rows)


def _trial(r: tuple) -> Trial:
    return Trial(
        id=r[0],
        batch=r[1],
        x=json.loads(r[2]),
        status=r[3],
        metrics=None if r[4] is None else json.loads(r[4]),
        objectives=None if r[5] is None else json.loads(r[5]),
        error=r[6],
        started=r[7],
        finished=r[8],
        fidelity=float(r[9]),
        cost=float(r[10]),
        parent=r[11],
    )
