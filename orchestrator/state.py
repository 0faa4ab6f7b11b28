"""State and history in one SQLite file, so a restart loses nothing.

::

    dispatcher thread --save(record) / save_worker(state)--> StateStore --> state.db (WAL)
    CLI, other processes --------- StateReader (read-only) --------------------^

The dispatcher thread is the only writer (its calls are synchronous, so a run's record is
committed before its process starts). WAL lets readers in other processes read while it
writes. ``synchronous=NORMAL`` keeps every commit safe from a crash of the orchestrator
(though not from a power cut, which would lose at most the last commits).

One orchestrator per state file: ``state.db.lock`` is held with ``flock`` while it runs, and
holds the holder's pid for the error message of a second one.

The schema carries its version in ``PRAGMA user_version``; :data:`MIGRATIONS` are the steps
from each version to the next, applied in one transaction at open. A file from a newer
release is refused, never rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from datetime import datetime

from loguru import logger

from .errors import OrchestratorError
from .runs import Cause, Outcome, RunRecord, RunState


class StateError(OrchestratorError):
    """The state file cannot be used (locked, read-only, corrupt, or too new)."""


#: ``MIGRATIONS[n]`` turns a version-n file into version n+1.
MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema
    """
    CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        disabled_reason TEXT,
        consecutive_failures INTEGER NOT NULL,
        last_run TEXT,
        last_success TEXT,
        last_error TEXT,
        last_outcome TEXT,
        last_duration REAL,
        last_due TEXT,
        cpu_seconds REAL,
        peak_rss_bytes INTEGER,
        missed INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        worker TEXT NOT NULL,
        cause TEXT NOT NULL,
        due_at TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        outcome TEXT,
        attempts INTEGER NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        pid INTEGER,
        pid_create_time REAL,
        error TEXT,
        traceback TEXT,
        result TEXT,
        cpu_seconds REAL,
        peak_rss_bytes INTEGER,
        stdout_tail TEXT,
        stderr_tail TEXT
    );
    CREATE INDEX runs_by_worker ON runs (worker, due_at);
    CREATE INDEX runs_unfinished ON runs (state) WHERE state != 'finished';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
#: Most changes kept in memory while the file cannot be written (the oldest go first).
MAX_UNWRITTEN = 100_000
#: Tries at the instance lock before another holder is assumed (20 ms apart).
LOCK_ATTEMPTS = 5

_RUN_COLUMNS = ("run_id", "worker", "cause", "due_at", "state", "started_at", "ended_at",
                "outcome", "attempts", "exit_code", "signal", "pid", "pid_create_time",
                "error", "traceback", "result", "cpu_seconds", "peak_rss_bytes",
                "stdout_tail", "stderr_tail")
_WORKER_COLUMNS = ("name", "enabled", "disabled_reason", "consecutive_failures", "last_run",
                   "last_success", "last_error", "last_outcome", "last_duration", "last_due",
                   "cpu_seconds", "peak_rss_bytes", "missed", "updated_at")


class StateStore:
    """The writer side; every method is called from the dispatcher thread only.

    :raises StateError: from :meth:`open` when the file cannot be used.
    """

    def __init__(self, path: str, limit_per_worker: int = 1000):
        self.path = os.path.abspath(path)
        self.limit_per_worker = limit_per_worker
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._in_batch = False
        self._batch: list = []       # statements of the open batch
        self._unwritten: list = []   # statements a failed commit left, oldest first
        self.write_errors = 0

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> None:
        """Take the instance lock, open the file, bring its schema up to date."""
        self._lock()
        try:
            self._db = _connect(self.path)
            _migrate(self._db, self.path)
            with self._db:  # fails at once on a read-only file or directory
                self._db.execute("UPDATE workers SET updated_at = updated_at WHERE 0")
                self._db.execute("CREATE TABLE IF NOT EXISTS _write_check (x)")
                self._db.execute("DROP TABLE _write_check")
        except sqlite3.Error as error:
            self.close()
            raise StateError(f"state file {self.path} cannot be used: {error}") from None
        except StateError:
            self.close()
            raise

    def close(self) -> None:
        if self._db is not None:
            self._commit([])  # a last try for changes kept while the file was read-only
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def announce(self, url: str) -> None:
        """Write the status server's URL into the lock file, for the command line to find."""
        if self._lock_fd is not None:
            text = f"{os.getpid()}\n{url}\n".encode()
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, text, 0)

    def _lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StateError(f"state file {self.path} cannot be used: cannot open its lock "
                             f"file: {error.strerror}") from None
        try:
            _flock_exclusive(fd)
        except BlockingIOError:
            holder = _holder(fd)[0] or "unknown"
            os.close(fd)
            raise StateError(f"state file {self.path} is in use by another orchestrator "
                             f"(pid {holder}); stop it first, or give this one another "
                             f"state_path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # -- writing -------------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        """Insert or update one run record: committed at once, or with the open batch; kept
        and written later if the file refuses it."""
        row = _run_row(record)
        self._write(f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_RUN_COLUMNS))})", row)
        if record.state is RunState.FINISHED:
            self._prune(record.worker)

    def save_worker(self, values: dict) -> None:
        """Insert or update one worker's persisted runtime state (keys: _WORKER_COLUMNS)."""
        row = {**values, "updated_at": datetime.now().astimezone().isoformat()}
        self._write(f"INSERT OR REPLACE INTO workers ({', '.join(_WORKER_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_WORKER_COLUMNS))})",
                    [_to_sql(row.get(column)) for column in _WORKER_COLUMNS])

    def _prune(self, worker: str) -> None:
        """Keep the newest ``limit_per_worker`` finished runs of ``worker`` (by due time)."""
        self._write("DELETE FROM runs WHERE worker = ? AND state = 'finished' AND due_at < "
                    "(SELECT due_at FROM runs WHERE worker = ? ORDER BY due_at DESC "
                    "LIMIT 1 OFFSET ?)", (worker, worker, self.limit_per_worker - 1))

    @contextlib.contextmanager
    def batch(self):
        """Commit every write made inside as one transaction (a run's record and its
        worker's counters change together, or not at all)."""
        if self._db is None or self._in_batch:
            yield
            return
        self._in_batch = True
        self._batch = []
        try:
            yield
        finally:
            self._in_batch = False
            statements, self._batch = self._batch, []
            self._commit(statements)

    def flush(self) -> bool:
        """Try again to write the changes a failed commit kept; ``True`` if none is left."""
        if self._unwritten and self._db is not None and not self._in_batch:
            self._commit([])
        return not self._unwritten

    def _write(self, sql: str, parameters) -> None:
        if self._db is None:
            return
        if self._in_batch:
            self._batch.append((sql, parameters))
        else:
            self._commit([(sql, parameters)])

    def _commit(self, statements: list) -> None:
        """Write ``statements`` in one transaction, after any that failed before.

        When the file cannot be written (a read-only disk, a full one), the statements are
        kept, in order, and written with the next commit that succeeds: every change is an
        idempotent upsert or prune, so nothing is lost across a spell of failures.
        """
        pending = self._unwritten + statements
        if not pending:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, parameters in pending:
                    self._db.execute(sql, parameters)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            self._unwritten = pending[-MAX_UNWRITTEN:]
            self.write_errors += 1
            logger.error("state file {}: write failed ({}); {} change(s) kept in memory, "
                         "written when the file can be written again", self.path, error,
                         len(self._unwritten))
            return
        if self._unwritten:
            logger.info("state file {}: {} kept change(s) written", self.path,
                        len(self._unwritten))
        self._unwritten = []

    # -- reading -------------------------------------------------------------------------

    def recent(self, worker: str | None = None, limit: int = 20) -> list[RunRecord]:
        if self._db is not None:
            return _recent(self._db, worker, limit)
        if not os.path.exists(self.path):  # not started yet, and never was
            return []
        reader = StateReader(self.path)
        try:
            return reader.recent(worker, limit)
        finally:
            reader.close()

    def load_workers(self) -> dict[str, dict]:
        """Each persisted worker's runtime state, by name."""
        if self._db is None:
            return {}
        rows = self._db.execute(f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers")
        return {row[0]: _worker_values(row) for row in rows}

    def unfinished(self) -> list[RunRecord]:
        """Runs a previous instance left pending or running."""
        if self._db is None:
            return []
        rows = self._db.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs "
                                f"WHERE state != 'finished'")
        return [_run_record(row) for row in rows]


class StateReader:
    """Read-only access for other processes (the CLI), while an instance runs or not.

    :raises StateError: if the file does not exist or cannot be read.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise StateError(f"state file {self.path} does not exist; has the orchestrator "
                             f"run with this state_path?")
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as error:
            raise StateError(f"state file {self.path} cannot be read: {error}") from None
        if version > SCHEMA_VERSION:
            raise StateError(_too_new(self.path, version))

    def recent(self, worker: str | None = None, limit: int = 20) -> list[RunRecord]:
        return _recent(self._db, worker, limit)

    def workers(self) -> dict[str, dict]:
        rows = self._db.execute(f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers")
        return {row[0]: _worker_values(row) for row in rows}

    def holder(self) -> tuple[int | None, str | None]:
        """``(pid, status URL)`` of the orchestrator running on this file, or
        ``(None, None)`` if none runs (the URL is None when it serves no HTTP)."""
        try:
            fd = os.open(self.path + ".lock", os.O_RDONLY)
        except OSError:
            return None, None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, url = _holder(fd)
            return (int(pid) if pid and pid.isdigit() else None), url
        finally:
            os.close(fd)
        return None, None

    def holder_pid(self) -> int | None:
        """The pid of the orchestrator running on this file, or None if none runs."""
        return self.holder()[0]

    def close(self) -> None:
        self._db.close()


# -- helpers ------------------------------------------------------------------------------

def _flock_exclusive(fd: int) -> None:
    """Take the instance lock, or raise BlockingIOError if another instance holds it.

    A reader (``orchestrator status``) probes the lock with a shared lock held for a few
    microseconds; a few quick retries keep such a probe from refusing a real start.
    """
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == LOCK_ATTEMPTS - 1:
                raise
            time.sleep(0.02)


def _holder(fd: int) -> tuple[str | None, str | None]:
    """``(pid, url)`` as the lock file's holder wrote them."""
    lines = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")
    pid = lines[0].strip() or None
    url = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    return pid, url


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 5000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:  # before anything could change the file
        db.close()
        raise StateError(_too_new(path, version))
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StateError(f"state file {path} cannot use write-ahead logging (journal mode "
                         f"{mode}); put it on a local file system")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _migrate(db: sqlite3.Connection, path: str) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(_too_new(path, version))
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if version:
        logger.info("state file {}: schema upgraded from version {} to {}", path, version,
                    SCHEMA_VERSION)


def _too_new(path: str, version: int) -> str:
    return (f"state file {path} has schema version {version}, newer than this release "
            f"understands ({SCHEMA_VERSION}); upgrade orchestrator, or use another state_path")


def _recent(db: sqlite3.Connection, worker: str | None, limit: int) -> list[RunRecord]:
    where, parameters = ("WHERE worker = ?", [worker]) if worker is not None else ("", [])
    rows = db.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {where} "
                      f"ORDER BY COALESCE(started_at, ended_at, due_at) DESC, due_at DESC "
                      f"LIMIT ?", [*parameters, limit])
    return [_run_record(row) for row in rows]


def _to_sql(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):
        return value.value
    return value


def _from_sql_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _run_row(record: RunRecord) -> list:
    values = {column: getattr(record, column, None) for column in _RUN_COLUMNS}
    values["result"] = None if record.result is None else repr(record.result)[:4096]
    return [_to_sql(values[column]) for column in _RUN_COLUMNS]


def _run_record(row) -> RunRecord:
    values = dict(zip(_RUN_COLUMNS, row))
    record = RunRecord(run_id=values["run_id"], worker=values["worker"],
                       cause=Cause(values["cause"]), due_at=_from_sql_time(values["due_at"]))
    record.state = RunState(values["state"])
    record.outcome = Outcome(values["outcome"]) if values["outcome"] else None
    for column in ("started_at", "ended_at"):
        setattr(record, column, _from_sql_time(values[column]))
    for column in ("attempts", "exit_code", "signal", "pid", "pid_create_time", "error",
                   "traceback", "result", "cpu_seconds", "peak_rss_bytes"):
        setattr(record, column, values[column])
    record.stdout_tail = values["stdout_tail"] or ""
    record.stderr_tail = values["stderr_tail"] or ""
    return record


def _worker_values(row) -> dict:
    values = dict(zip(_WORKER_COLUMNS, row))
    values["enabled"] = bool(values["enabled"])
    for column in ("last_run", "last_success", "last_due"):
        values[column] = _from_sql_time(values[column])
    values["last_outcome"] = Outcome(values["last_outcome"]) if values["last_outcome"] else None
    return values
