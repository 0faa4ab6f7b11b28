"""State and history in one SQLite file, so a restart loses nothing.

::

    dispatcher thread --save(record) / save_worker(state)--> StateStore --> state.db (WAL)
    other threads (history(), /runs) --- a read-only connection each ------^
    CLI, other processes --------- StateReader (read-only) -----------------^

The dispatcher thread is the only writer; each of its steps is one transaction, committed
before the runs it starts exist. WAL lets readers in other threads and processes read
while it writes. ``synchronous=NORMAL`` keeps every commit safe from a crash of the
orchestrator (though not from a power cut, which would lose at most the last commits).

One orchestrator per state file, whatever path names it: the file itself (its inode) is
held with ``flock`` while it runs, so a symlink, a hard link or a relative path meet the
same lock; a second instance is refused with the holder's pid, read from /proc/locks. If the
file is deleted while in use, its whole state is written to a new file at the path; if it is
replaced by another file, the orchestrator stops rather than overwrite it (see
:meth:`StateStore.check_file`).

The schema carries its version in ``PRAGMA user_version``; :data:`MIGRATIONS` are the steps
from each version to the next, applied in one transaction at open. A file from a newer
release is refused, never rewritten.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import sqlite3
import threading
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
    # 1 -> 2: when a worker was disabled; where a run ran (a cluster's node and host); what
    # the running instance tells the command line (pid, status URL, control socket)
    """
    ALTER TABLE workers ADD COLUMN disabled_at TEXT;
    ALTER TABLE runs ADD COLUMN node TEXT;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN stdout_bytes INTEGER;
    ALTER TABLE runs ADD COLUMN stderr_bytes INTEGER;
    CREATE TABLE instance (key TEXT PRIMARY KEY, value TEXT);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
#: Most changes kept in memory while the file cannot be written (the oldest go first); a
#: change of the same run or worker replaces the one kept before it.
MAX_UNWRITTEN = 100_000
#: Tries at the instance lock before another holder is assumed (20 ms apart).
LOCK_ATTEMPTS = 5
#: While the file refuses writes, they are tried again this often (not at every change).
RETRY_WRITE_SECONDS = 5.0
#: While writes keep failing, one log line this often says how many did.
WRITE_ERROR_LOG_SECONDS = 60.0

_RUN_COLUMNS = ("run_id", "worker", "cause", "due_at", "state", "started_at", "ended_at",
                "outcome", "attempts", "exit_code", "signal", "pid", "pid_create_time",
                "error", "traceback", "result", "cpu_seconds", "peak_rss_bytes",
                "stdout_tail", "stderr_tail", "stdout_bytes", "stderr_bytes", "node", "host")
_WORKER_COLUMNS = ("name", "enabled", "disabled_reason", "disabled_at",
                   "consecutive_failures", "last_run", "last_success", "last_error",
                   "last_outcome", "last_duration", "last_due", "cpu_seconds",
                   "peak_rss_bytes", "missed", "updated_at")


class StateStore:
    """The writer side: its writes come from the dispatcher thread only; :meth:`recent`
    may be called from any thread.

    :raises StateError: from :meth:`open` when the file cannot be used.
    """

    def __init__(self, path: str, limit_per_worker: int = 1000):
        self.path = os.path.abspath(path)
        self.limit_per_worker = limit_per_worker
        self._db: sqlite3.Connection | None = None
        self._opened = False                 # open() went through
        self._lock_fd: int | None = None     # the state file itself, flock'ed
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of that file
        self._in_batch = False
        self._batch: list = []       # (key, sql, parameters) of the open batch
        # Changes a failed commit left, by key (a run's or worker's newest change replaces
        # the one before), oldest first; tried again every RETRY_WRITE_SECONDS.
        self._unwritten: collections.OrderedDict = collections.OrderedDict()
        self._retry_at: float | None = None
        self._failures = 0           # failed commits since the last line about them
        self._failure_logged_at: float | None = None
        self._readers = threading.local()    # a read-only connection per reading thread
        self._reader_connections: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> None:
        """Take the instance lock, open the file, bring its schema up to date.

        :raises StateError: if the directory does not exist, another orchestrator holds the
            file, or it cannot be used (read-only, not SQLite, from a newer release).
        """
        self._lock()
        try:
            self._db = _connect(self.path)
            _migrate(self._db, self.path)
            with self._db:  # fails at once on a read-only file or directory
                self._db.execute("UPDATE workers SET updated_at = updated_at WHERE 0")
                self._db.execute("CREATE TABLE IF NOT EXISTS _write_check (x)")
                self._db.execute("DROP TABLE _write_check")
                self._db.execute("DELETE FROM instance")  # a dead instance's announcement
            self._opened = True
        except sqlite3.Error as error:
            self.close()
            raise StateError(f"state file {self.path} cannot be used: {error}") from None
        except StateError:
            self.close()
            raise

    def close(self) -> None:
        if self._db is not None and self._opened:
            self._retry_at = None
            self._write("instance", "DELETE FROM instance", ())
            self._commit([])  # a last try for changes kept while the file could not be written
            if self._unwritten:
                logger.error("state file {}: {} change(s) could not be written before stopping; "
                             "runs left open in the file are settled at the next start",
                             self.path, len(self._unwritten))
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
            self._opened = False
        with self._readers_lock:
            for connection in self._reader_connections:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            self._reader_connections.clear()
            self._readers = threading.local()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def announce(self, **values: str | None) -> None:
        """Tell the command line how to reach this instance (pid, status URL, socket)."""
        for key, value in {"pid": str(os.getpid()), **values}.items():
            self._write(("instance", key), "INSERT OR REPLACE INTO instance (key, value) "
                                           "VALUES (?, ?)", (key, value))

    def _lock(self) -> None:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise StateError(f"state file {self.path} cannot be made: its directory "
                             f"{directory} does not exist; create it, or choose another "
                             f"state_path")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except (PermissionError, OSError) as error:
            try:  # a read-only file may still be locked; SQLite then says what is wrong
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise StateError(f"state file {self.path} cannot be used: "
                                 f"{error.strerror}") from None
        try:
            _flock_exclusive(fd)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise StateError(f"state file {self.path} is in use by another orchestrator "
                             f"({f'pid {holder}' if holder else 'pid unknown'}); stop it "
                             f"first, or give this one another state_path") from None
        info = os.fstat(fd)
        self._lock_fd, self._identity = fd, (info.st_dev, info.st_ino)

    # -- the file under our feet ---------------------------------------------------------

    def check_file(self) -> str:
        """Whether the path still names the file this store holds: ``"ok"``; ``"recreated"``
        (it was deleted: the whole state was written to a new file at the path, nothing
        lost); or ``"replaced"`` (another file is there now, which is not overwritten: the
        caller stops). Both last cases are logged as errors."""
        if self._lock_fd is None or self._db is None:
            return "ok"
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == self._identity:
            return "ok"
        if now is not None:
            holder = None
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    holder = _holder_pid(fd) if _locked(fd) else None
                finally:
                    os.close(fd)
            except OSError:
                pass
            logger.error("state file {} was replaced by another file while in use{}; stopping "
                         "(the other file is left as it is)", self.path,
                         f" (held by pid {holder})" if holder else "")
            return "replaced"
        try:
            self._recreate()
        except (OSError, sqlite3.Error, StateError) as error:
            logger.error("state file {} was deleted while in use, and a new one cannot be "
                         "written ({}); stopping", self.path, error)
            return "replaced"
        logger.error("state file {} was deleted while in use; its whole state was written to "
                     "a new file at that path", self.path)
        return "recreated"

    def _recreate(self) -> None:
        """Write everything the open (deleted) file holds to a new file at the path."""
        old_db, old_fd = self._db, self._lock_fd
        self._lock_fd = None
        self._lock()
        try:
            new_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            old_db.backup(new_db)
            new_db.close()
            self._db = _connect(self.path)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = old_fd
            raise
        old_db.close()
        os.close(old_fd)
        with self._readers_lock:  # readers reopen the path on their next read
            self._readers = threading.local()

    # -- writing -------------------------------------------------------------------------

    def save(self, record: RunRecord) -> None:
        """Insert or update one run record: committed at once, or with the open batch; kept
        and written later if the file refuses it."""
        row = _run_row(record)
        self._write(("run", record.run_id),
                    f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_RUN_COLUMNS))})", row)
        if record.state is RunState.FINISHED:
            self._prune(record.worker)

    def save_worker(self, values: dict) -> None:
        """Insert or update one worker's persisted runtime state (keys: _WORKER_COLUMNS)."""
        row = {**values, "updated_at": datetime.now().astimezone().isoformat()}
        self._write(("worker", values["name"]),
                    f"INSERT OR REPLACE INTO workers ({', '.join(_WORKER_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_WORKER_COLUMNS))})",
                    [_to_sql(row.get(column)) for column in _WORKER_COLUMNS])

    def _prune(self, worker: str) -> None:
        """Keep the newest ``limit_per_worker`` finished runs of ``worker`` (by due time)."""
        self._write(("prune", worker),
                    "DELETE FROM runs WHERE worker = ? AND state = 'finished' AND due_at < "
                    "(SELECT due_at FROM runs WHERE worker = ? ORDER BY due_at DESC "
                    "LIMIT 1 OFFSET ?)", (worker, worker, self.limit_per_worker - 1))

    @contextlib.contextmanager
    def batch(self):
        """Commit every write made inside as one transaction (a step of the dispatcher)."""
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

    def retry_in(self) -> float | None:
        """Seconds until changes the file refused are tried again; None if none is kept."""
        if not self._unwritten or self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def _write(self, key, sql: str, parameters) -> None:
        if self._db is None:
            return
        if self._in_batch:
            self._batch.append((key, sql, parameters))
        else:
            self._commit([(key, sql, parameters)])

    def _commit(self, statements: list) -> None:
        """Write ``statements`` in one transaction, after any that failed before.

        When the file cannot be written (a read-only disk, a full one), the statements are
        kept, the newest change of each run and worker replacing the older, and tried again
        every RETRY_WRITE_SECONDS, not at every change; every change is an idempotent upsert
        or prune, so nothing is lost across a spell of failures.
        """
        for key, sql, parameters in statements:
            self._unwritten.pop(key, None)
            self._unwritten[key] = (sql, parameters)
        while len(self._unwritten) > MAX_UNWRITTEN:
            self._unwritten.popitem(last=False)
        if not self._unwritten:
            return
        now = time.monotonic()
        if self._retry_at is not None and now < self._retry_at:
            return  # failing: wait for the retry time instead of hammering the disk
        pending = list(self._unwritten.values())
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
            self._retry_at = now + RETRY_WRITE_SECONDS
            self._failures += 1
            if self._failure_logged_at is None or \
                    now - self._failure_logged_at >= WRITE_ERROR_LOG_SECONDS:
                logger.error("state file {}: {} write(s) failed ({}); {} change(s) kept in "
                             "memory, written when the file can be written again", self.path,
                             self._failures, error, len(self._unwritten))
                self._failure_logged_at, self._failures = now, 0
            return
        if self._retry_at is not None:
            logger.info("state file {}: {} kept change(s) written", self.path, len(pending))
        self._unwritten.clear()
        self._retry_at = self._failure_logged_at = None
        self._failures = 0

    # -- reading (any thread) ------------------------------------------------------------

    def recent(self, worker: str | None = None, limit: int = 20) -> list[RunRecord]:
        if self._lock_fd is None:
            if not os.path.exists(self.path):  # not started yet, and never was
                return []
            reader = StateReader(self.path)
            try:
                return reader.recent(worker, limit)
            finally:
                reader.close()
        try:
            return _recent(self._reader(), worker, limit)
        except sqlite3.Error:  # the file was replaced meanwhile: once more, on a new one
            self._readers = threading.local()
            return _recent(self._reader(), worker, limit)

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                         check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 5000")
            with self._readers_lock:
                self._reader_connections.append(connection)
            self._readers.connection = connection
        return connection

    def load_workers(self) -> dict[str, dict]:
        """Each persisted worker's runtime state, by name."""
        if self._db is None:
            return {}
        rows = self._db.execute(f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers")
        return {row[0]: _worker_values(row) for row in rows}

    def find(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id`` (any thread), or None."""
        rows = self._reader().execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE "
                                      f"run_id = ?", (run_id,)).fetchall() \
            if self._lock_fd is not None else []
        return _run_record(rows[0]) if rows else None

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

    def find(self, run_id: str) -> RunRecord | None:
        rows = self._db.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?",
                                (run_id,)).fetchall()
        return _run_record(rows[0]) if rows else None

    def workers(self) -> dict[str, dict]:
        rows = self._db.execute(f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers")
        return {row[0]: _worker_values(row) for row in rows}

    def instance(self) -> dict[str, str] | None:
        """What the running orchestrator of this file announced (``pid``, ``url``,
        ``socket``), or None if none runs (the file is not locked)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not _locked(fd):
                return None
            announced = {"pid": str(_holder_pid(fd) or "")}
        finally:
            os.close(fd)
        with contextlib.suppress(sqlite3.Error):  # a file from before version 2 has none
            announced.update(self._db.execute("SELECT key, value FROM instance").fetchall())
        return announced

    def holder_pid(self) -> int | None:
        """The pid of the orchestrator running on this file, or None if none runs."""
        announced = self.instance()
        pid = (announced or {}).get("pid") or ""
        return int(pid) if pid.isdigit() else None

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


def _locked(fd: int) -> bool:
    """Whether another open file holds the instance lock on ``fd``'s file (a probe: a
    shared lock taken and dropped at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _holder_pid(fd: int) -> int | None:
    """The pid that holds the exclusive flock on ``fd``'s file, from /proc/locks."""
    info = os.fstat(fd)
    wanted = (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not the holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE":
            device = fields[5].split(":")
            if len(device) == 3 and (int(device[0], 16), int(device[1], 16),
                                     int(device[2])) == wanted:
                return int(fields[4])
    return None


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
                   "traceback", "result", "cpu_seconds", "peak_rss_bytes", "stdout_bytes",
                   "stderr_bytes", "node", "host"):
        setattr(record, column, values[column])
    record.stdout_tail = values["stdout_tail"] or ""
    record.stderr_tail = values["stderr_tail"] or ""
    return record


def _worker_values(row) -> dict:
    values = dict(zip(_WORKER_COLUMNS, row))
    values["enabled"] = bool(values["enabled"])
    for column in ("last_run", "last_success", "last_due", "disabled_at"):
        values[column] = _from_sql_time(values[column])
    values["last_outcome"] = Outcome(values["last_outcome"]) if values["last_outcome"] else None
    return values
