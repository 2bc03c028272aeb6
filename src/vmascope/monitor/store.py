"""The watch history: samples in SQLite (WAL, so a kill never leaves it unreadable).

The schema's version is SQLite's ``user_version``; opening a database of an older version
migrates it in one transaction (``MIGRATIONS[v]`` takes version v to v + 1). A database of
a newer version than this program knows is refused, not touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError, VmascopeError

SCHEMA_VERSION = 2


def _v0_to_v1(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE samples (
        time REAL NOT NULL, pid INTEGER NOT NULL, comm TEXT NOT NULL,
        map_count INTEGER NOT NULL, max_map_count INTEGER, rss_bytes INTEGER)""")
    db.execute("CREATE INDEX samples_pid ON samples (pid, time)")
    db.execute("CREATE INDEX samples_comm ON samples (comm, time)")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    # version 2: which process (start time, command line) and the budget causes
    db.execute("ALTER TABLE samples ADD COLUMN start_ticks INTEGER")
    db.execute("ALTER TABLE samples ADD COLUMN cmdline TEXT")
    db.execute("ALTER TABLE samples ADD COLUMN causes TEXT")
    db.execute("ALTER TABLE samples ADD COLUMN target TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1, _v1_to_v2]


@dataclasses.dataclass(frozen=True)
class Sample:
    time: float
    pid: int
    comm: str
    map_count: int
    max_map_count: int | None
    rss_bytes: int | None
    start_ticks: int | None = None
    cmdline: str | None = None
    causes: dict[str, int] | None = None
    target: str | None = None


def default_db() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base, "vmascope", "watch.db")


class Store:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UsageError(f"{self.path}: no such database (vmascope watch --db writes one)")
        if create and not self.path.parent.is_dir():
            if self.path.parent == default_db().parent:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            else:
                raise UsageError(f"{self.path}: its directory does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self._check_version()
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise VmascopeError(f"{self.path}: not a vmascope watch database ({exc})") from None

    def _check_version(self) -> None:
        version = self.version()
        if version > SCHEMA_VERSION:
            self.db.close()
            raise VmascopeError(f"{self.path}: schema version {version} is newer than this "
                                f"vmascope knows ({SCHEMA_VERSION}): upgrade vmascope")

    def _migrate(self) -> None:
        version = self.version()
        if version == SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version:]:
                step(self.db)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def add(self, s: Sample) -> None:
        """One sample, in its own transaction."""
        self.db.execute(
            "INSERT INTO samples (time, pid, comm, map_count, max_map_count, rss_bytes,"
            " start_ticks, cmdline, causes, target) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (s.time, s.pid, s.comm, s.map_count, s.max_map_count, s.rss_bytes,
             s.start_ticks, s.cmdline, json.dumps(s.causes) if s.causes else None, s.target))

    def samples(self, *, pid: int | None = None, comm: str | None = None,
                target: str | None = None, since: float | None = None) -> list[Sample]:
        where, args = [], []
        for col, val in (("pid", pid), ("comm", comm), ("target", target)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        sql = ("SELECT time, pid, comm, map_count, max_map_count, rss_bytes, start_ticks,"
               " cmdline, causes, target FROM samples"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time")
        return [Sample(*row[:8], causes=json.loads(row[8]) if row[8] else None,
                       target=row[9]) for row in self.db.execute(sql, args)]

    def series(self) -> list[tuple[str, int, str, int]]:
        """(target, pid, comm, samples) of every series in the database."""
        rows = self.db.execute("SELECT COALESCE(target, CAST(pid AS TEXT)), pid, comm,"
                               " COUNT(*) FROM samples GROUP BY 1, 2, 3 ORDER BY MIN(time)")
        return [(str(t), int(p), str(c), int(n)) for t, p, c, n in rows]

    def close(self) -> None:
        self.db.close()


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Sample", "Store", "default_db"]
