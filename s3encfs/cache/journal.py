"""SQLite journal of everything that is not yet in S3.

A row is written (WAL mode) before ``close()``/``fsync()`` return, so a ``kill -9`` of the mount
loses nothing that was closed: the next mount replays the rows.  ``synchronous=NORMAL`` survives a
process crash; `sync()` forces a full checkpoint for ``fsync``-grade durability.

Also holds the persistent attribute cache: (key, etag) → sealed metadata, so a remount does not
HEAD objects it has already seen.

When the codec seals (client mode), a pending row's path and data are sealed with the row id in
the associated data (purpose ``journal:<id>:path`` / ``journal:<id>:data``), so rows cannot be
swapped, duplicated or renumbered, and a row that is not sealed is refused (logged, never
replayed). Journals written before row binding (``kv`` has no ``journal-aad``) still open rows
sealed under the plain ``journal`` purpose; new journals never accept those. Rows are sealed
under a per-journal key (cache/rowseal.py: one key derivation per mount, not one per row write);
rows sealed as blobs by earlier versions still open.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s3encfs.cache.rowseal import KEY_PREFIX, RowKeyError, RowSealer, is_row_sealed

log = logging.getLogger("s3encfs.journal")
ROW_AAD_KEY = "journal-aad"  # kv marker: every pending row is sealed bound to its row id
Sealer = Callable[[str, bytes], bytes]  # (purpose, data) -> sealed / opened, like seal_blob


class RefusedRow(Exception):
    """A journal row that does not authenticate (unsealed, or sealed for another row)."""


@dataclass
class PendingRow:
    row_id: int
    kind: str  # "file" | "meta" | "dir"
    path: str  # plaintext path, components joined by "/" (surrogateescape-safe str)
    data: dict[str, Any]


class _Reserve:
    """A few MiB held on the cache disk so the journal can still record (and, above all, delete)
    rows when staging data has filled the disk: freeing space needs a WAL write."""

    SIZE = 8 * 1024 * 1024

    def __init__(self, path: str):
        self.path = path
        self.refill()

    def refill(self) -> None:
        if os.path.exists(self.path):
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.SIZE)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def release(self) -> bool:
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False


class _GuardedDb:
    """sqlite3 connection on a disk that may be full.  Only *deletes* may release the reserve
    (freeing space needs a WAL write, and a delete that failed would have a landed upload sent
    again for ever); adds and updates on a full disk are OSError(ENOSPC) at once, which the FUSE
    layer reports as such.  While the reserve is spent, every call tries to refill it first, and
    `Journal.short_of_space` tells writers to stop (ENOSPC) so they cannot eat the freed space."""

    def __init__(self, conn: sqlite3.Connection, reserve: _Reserve):
        self.conn = conn
        self.reserve = reserve
        self.released = False
        self.writes = 0  # write statements (a batch counts once): `status` → journal_writes

    def _retry(self, fn: Callable[[], Any], release: bool) -> Any:
        if self.released:
            self.after_delete()
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            if release and self.reserve.release():
                self.released = True
                try:
                    return fn()
                except sqlite3.OperationalError as again:
                    exc = again
            raise OSError(errno.ENOSPC, f"cache disk full: journal write failed ({exc})") from None

    def execute(self, sql: str, params: Any = (), *, release: bool = False) -> sqlite3.Cursor:
        if not sql.startswith(("SELECT", "BEGIN", "COMMIT", "PRAGMA", "CREATE")):
            self.writes += 1
        return self._retry(lambda: self.conn.execute(sql, params), release)

    def executemany(self, sql: str, params: Any, *, release: bool = False) -> sqlite3.Cursor:
        self.writes += 1
        return self._retry(lambda: self.conn.executemany(sql, params), release)

    def after_delete(self) -> None:
        if self.released:
            self.reserve.refill()
            self.released = not os.path.exists(self.reserve.path)

    def close(self) -> None:
        self.conn.close()


def _private(path: str) -> None:
    """chmod 0600 (files an older version or another umask created wider)."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)


# The connection's settings, then the tables (IF NOT EXISTS: an existing journal opens as is).
# Only this mount opens its journal (the cache dir is locked): an exclusive lock held for the
# connection's life, set before WAL mode is entered, spares every statement its lock calls and
# the shared-memory index (-shm): half the CPU per statement.
_SCHEMA = (
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
    " path TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attrcache (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
    " meta TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
)


class Journal:
    def __init__(
        self,
        path: str,
        *,
        seal: Sealer | None = None,
        unseal: Sealer | None = None,
    ):
        # client mode seals every row (paths are file names, data holds attributes), so the
        # cache directory holds no plaintext names or metadata
        self._sealing = seal is not None
        self._seal: Sealer = seal or (lambda _p, b: b)
        self._unseal: Sealer = unseal or (lambda _p, b: b)
        self._legacy = False  # rows sealed under the unbound "journal" purpose accepted
        self._lock = threading.Lock()
        self._next_id: int | None = None  # the next row id (ids only grow while open)
        # row id -> the path this object last wrote into that row: an update that keeps the
        # path rewrites kind and data only (one AES-GCM seal of the path per row write less
        # in client mode; ~3 of a file's ~5 row writes keep its path)
        self._paths: dict[int, str] = {}
        # created 0600 before SQLite opens it: SQLite gives -wal/-shm the database's mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        _private(path)
        self._db = _GuardedDb(
            sqlite3.connect(path, check_same_thread=False, isolation_level=None),
            _Reserve(path + ".reserve"),
        )
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._rows = RowSealer(self._seal, self._unseal, self._get_kv, self._set_kv)
        if self._sealing:
            self._open_sealing()
        for name in (path, path + "-wal", path + "-shm"):
            _private(name)

    # -- pending operations ------------------------------------------------------------------
    # Paths are surrogateescape str (non-UTF-8 names); sqlite3 cannot encode lone surrogates as
    # TEXT, so paths are stored as their raw bytes (BLOB) and decoded back in `rows`.
    def add(self, kind: str, path: str, data: dict[str, Any]) -> int:
        with self._lock:  # the id is chosen first: it is part of what the row is sealed with
            if self._next_id is None:  # once per open; then counted here (one statement a row)
                self._next_id = int(self._db.execute(
                    "SELECT COALESCE(MAX(id), 0) + 1 FROM pending").fetchone()[0])
            row_id = self._next_id
            self._db.execute(
                "INSERT INTO pending (id, kind, path, data) VALUES (?, ?, ?, ?)",
                (row_id, kind, self._pack_path(row_id, path), self._pack_data(row_id, data)),
            )
            self._next_id = row_id + 1
            self._paths[row_id] = path
            return row_id

    def update(self, row_id: int, path: str, data: dict[str, Any], kind: str) -> None:
        """Rewrite a row, its kind too: a file's "meta" row (chmod of an uploaded file) becomes
        a "file" row when the file is written again — kept as "meta", the replay skipped it
        and the closed data was lost (issue 11, found by tests/test_model_inprocess.py)."""
        with self._lock:
            if self._paths.get(row_id) == path:  # the row holds this path, sealed for its id
                self._db.execute("UPDATE pending SET kind=?, data=? WHERE id=?",
                                 (kind, self._pack_data(row_id, data), row_id))
                return
            self._db.execute(
                "UPDATE pending SET kind=?, path=?, data=? WHERE id=?",
                (kind, self._pack_path(row_id, path), self._pack_data(row_id, data), row_id),
            )
            self._paths[row_id] = path

    def remove(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE id=?", (row_id,), release=True)
            self._paths.pop(row_id, None)
            self._db.after_delete()

    def remove_many(self, row_ids: list[int]) -> None:
        """Delete several rows in one transaction (one commit, not one per row: a directory's
        index write settles the rows of all its files at once)."""
        if len(row_ids) < 2:
            for row_id in row_ids:
                self.remove(row_id)
            return
        with self._lock:
            self._db.execute("BEGIN", release=True)
            try:
                self._db.executemany("DELETE FROM pending WHERE id=?",
                                     [(r,) for r in row_ids], release=True)
                self._db.execute("COMMIT", release=True)
                for row_id in row_ids:
                    self._paths.pop(row_id, None)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.conn.execute("ROLLBACK")
                raise
            self._db.after_delete()

    def rows(self) -> list[PendingRow]:
        """Every pending row that authenticates; a refused one is logged by id and left in
        place (never replayed, never silently dropped)."""
        with self._lock:
            raw = self._db.execute("SELECT id, kind, path, data FROM pending ORDER BY id")
            out = []
            for r in raw.fetchall():
                try:
                    out.append(PendingRow(r[0], r[1], self._unpack_path(r[0], r[2]),
                                          self._unpack_data(r[0], r[3])))
                except RefusedRow as exc:
                    log.error("journal row %d refused (not replayed): %s", r[0], exc)
            return out

    @property
    def writes(self) -> int:
        """Write statements so far (an executemany counts once): the per-file cost in status."""
        return self._db.writes

    def short_of_space(self) -> bool:
        """The reserve is spent and cannot be refilled yet: the cache disk is full."""
        if not self._db.released:
            return False
        with self._lock:
            self._db.after_delete()
            return self._db.released

    def row_ids(self) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT id FROM pending").fetchall()]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    # -- attribute cache ------------------------------------------------------------------------
    def cached_meta(self, key: str, etag: str) -> dict[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT etag, meta FROM attrcache WHERE key=?", (key,)
            ).fetchone()
        if row is None or row[0] != etag:
            return None
        result: dict[str, str] = json.loads(row[1])
        return result

    def cache_meta_many(self, items: list[tuple[str, str, dict[str, str]]]) -> None:
        if not items:
            return
        with self._lock:
            # only a cache: on a full disk it is skipped, and the transaction never left open
            # (later journal rows would join it and never be committed)
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO attrcache (key, etag, meta) VALUES (?, ?, ?)",
                    [(k, e, json.dumps(m)) for k, e, m in items],
                )
                self._db.execute("COMMIT")
            except OSError:
                with contextlib.suppress(sqlite3.Error):
                    self._db.conn.execute("ROLLBACK")

    def forget_meta(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM attrcache WHERE key=?", (key,), release=True)

    def get_kv(self, k: str) -> str | None:
        with self._lock:
            return self._get_kv(k)

    def set_kv(self, k: str, v: str) -> None:
        with self._lock:
            self._set_kv(k, v)

    def _get_kv(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM kv WHERE k=?", (k,)).fetchone()
        return None if row is None else str(row[0])

    def _set_kv(self, k: str, v: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, v))

    def delete_kv(self, k: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kv WHERE k=?", (k,), release=True)

    def kv_items(self, prefix: str) -> list[tuple[str, str]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT k, v FROM kv WHERE k >= ? AND k < ?", (prefix, prefix + "\uffff")
            )
            return [(str(k), str(v)) for k, v in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _open_sealing(self) -> None:
        """Row binding marker; journal keys no row needs any more go (cache/rowseal.py)."""
        if self.get_kv(ROW_AAD_KEY) != "1":
            self._legacy = self.count() > 0  # an older version's rows: open them the old way
            if not self._legacy:
                self.set_kv(ROW_AAD_KEY, "1")
        if self.count() == 0:
            self._db.execute("DELETE FROM kv WHERE k >= ? AND k < ?",
                             (KEY_PREFIX, KEY_PREFIX + "\uffff"), release=True)

    def _purpose(self, row_id: int, part: str) -> str:
        return f"journal:{row_id}:{part}"

    def _open(self, row_id: int, part: str, sealed: bytes) -> bytes:
        from s3encfs.codec import IntegrityError

        if is_row_sealed(sealed):  # under a journal key (cache/rowseal.py)
            try:
                return self._rows.open(self._purpose(row_id, part), sealed)
            except (RowKeyError, IntegrityError) as exc:
                raise RefusedRow(f"{part} does not authenticate for this row: {exc}") from None
        try:
            return self._unseal(self._purpose(row_id, part), sealed)
        except IntegrityError as exc:
            if not self._legacy:
                raise RefusedRow(f"{part} does not authenticate for this row: {exc}") from None
        try:
            return self._unseal("journal", sealed)
        except IntegrityError as exc:
            raise RefusedRow(f"{part} does not authenticate: {exc}") from None

    def _pack_path(self, row_id: int, path: str) -> bytes:
        raw = path.encode("utf-8", "surrogateescape")
        return self._rows.seal(self._purpose(row_id, "path"), raw) if self._sealing else raw

    def _unpack_path(self, row_id: int, value: str | bytes) -> str:
        if not self._sealing:
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            return raw.decode("utf-8", "surrogateescape")
        if isinstance(value, str):
            raise RefusedRow("path is not sealed")
        return self._open(row_id, "path", value).decode("utf-8", "surrogateescape")

    def _pack_data(self, row_id: int, data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        if not self._sealing:
            return raw.decode()
        sealed = self._rows.seal(self._purpose(row_id, "data"), raw)
        return "sealed:" + base64.b64encode(sealed).decode()

    def _unpack_data(self, row_id: int, text: str) -> dict[str, Any]:
        if text.startswith("sealed:"):
            if not self._sealing:
                raise RefusedRow("data is sealed but this mount does not seal")
            text = self._open(row_id, "data", base64.b64decode(text[7:])).decode()
        elif self._sealing:
            raise RefusedRow("data is not sealed")
        result: dict[str, Any] = json.loads(text)
        return result
