"""The journal when the codec seals (client mode; issue 10, item 7): rows are bound to their row
id, unsealed or swapped rows are refused (never replayed), journals from before the binding
still open, and the files are 0600 (incl. -wal/-shm)."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import stat
from pathlib import Path

from s3encfs.cache.journal import Journal
from s3encfs.crypto.client_codec import ClientCodec

KID = "0123456789abcdef"


def codec() -> ClientCodec:
    return ClientCodec({KID: bytes(range(32))}, KID)


def sealed_journal(path: Path) -> Journal:
    c = codec()
    return Journal(str(path), seal=c.seal_blob, unseal=c.open_blob)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def _plant_old_row(p: Path, c: ClientCodec, row_id: int, path_purpose: str,
                   data_purpose: str) -> None:
    """A row for `old/file` sealed as a blob per part, as versions before the journal key did."""
    db = raw(p)
    data = "sealed:" + base64.b64encode(c.seal_blob(data_purpose, json.dumps(
        {"file_id": "old"}).encode())).decode()
    db.execute("INSERT INTO pending (id, kind, path, data) VALUES (?, 'file', ?, ?)",
               (row_id, c.seal_blob(path_purpose, b"old/file"), data))
    db.close()


def test_rows_round_trip_and_files_are_private(tmp_path: Path) -> None:
    p = tmp_path / "journal.sqlite"
    j = sealed_journal(p)
    a = j.add("file", "secret/name.txt", {"file_id": "f1", "dirty": "00"})
    j.update(a, "secret/renamed.txt", {"file_id": "f1", "dirty": "ff"}, "file")
    b = j.add("dir", "other", {"mode": 0o700})
    rows = j.rows()
    assert [(r.row_id, r.path) for r in rows] == [(a, "secret/renamed.txt"), (b, "other")]
    for name in ("journal.sqlite", "journal.sqlite-wal"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # exclusive locking: no shared-memory index beside the journal (cache/journal.py)
    assert not (tmp_path / "journal.sqlite-shm").exists()
    j.close()
    assert b"secret" not in p.read_bytes()


def test_swapped_and_unsealed_rows_refused(tmp_path: Path, caplog) -> None:
    p = tmp_path / "journal.sqlite"
    j = sealed_journal(p)
    a = j.add("file", "a.txt", {"file_id": "fa"})
    b = j.add("file", "b.txt", {"file_id": "fb"})
    c = j.add("file", "c.txt", {"file_id": "fc"})
    j.close()  # the open journal holds its file exclusively: tampered with at rest
    db = raw(p)
    pb, db_ = db.execute("SELECT path, data FROM pending WHERE id=?", (b,)).fetchone()
    db.execute("UPDATE pending SET path=?, data=? WHERE id=?", (pb, db_, a))  # b's row as a
    db.execute("UPDATE pending SET data=? WHERE id=?", ('{"file_id": "evil"}', c))  # unsealed
    db.execute("INSERT INTO pending (id, kind, path, data) VALUES (99, 'file', ?, ?)",
               (b"planted", '{"file_id": "planted"}'))
    db.close()
    j = sealed_journal(p)
    with caplog.at_level(logging.ERROR, logger="s3encfs.journal"):
        rows = j.rows()
    assert [r.row_id for r in rows] == [b]
    refused = " ".join(r.getMessage() for r in caplog.records)
    for rid in (a, c, 99):
        assert f"journal row {rid} refused" in refused
    assert j.count() == 4  # refused rows stay for inspection; nothing is silently dropped


def test_journal_from_before_row_binding_still_opens(tmp_path: Path) -> None:
    """Rows an older version sealed under the plain "journal" purpose, crash-left on disk."""
    p = tmp_path / "journal.sqlite"
    c = codec()
    Journal(str(p)).close()  # creates the tables (unsealed mode writes no marker)
    _plant_old_row(p, c, 1, "journal", "journal")
    j = sealed_journal(p)
    assert [(r.path, r.data) for r in j.rows()] == [("old/file", {"file_id": "old"})]


def test_unsealed_journal_in_a_sealing_mount_refused(tmp_path: Path) -> None:
    """A journal written by a mount that did not seal (or forged) must not be replayed by a
    client-mode mount, which would then seal and upload it."""
    p = tmp_path / "journal.sqlite"
    plain = Journal(str(p))
    plain.add("file", "x", {"file_id": "x"})
    plain.close()
    j = sealed_journal(p)
    assert j.rows() == []
    assert j.count() == 1  # kept, not replayed


def test_rows_sealed_under_one_journal_key(tmp_path: Path) -> None:
    """Row writes derive no key each (issue 16): one sealed journal key per journal opened for
    writing; a reopened journal reads the rows and seals new ones under a fresh key, so a
    nonce counter never repeats under one key."""
    p = tmp_path / "journal.sqlite"
    c = codec()
    blobs: list[str] = []

    def seal(purpose: str, data: bytes) -> bytes:
        blobs.append(purpose)
        return c.seal_blob(purpose, data)

    j = Journal(str(p), seal=seal, unseal=c.open_blob)
    ids = [j.add("file", f"dir/f{i}", {"file_id": f"f{i}"}) for i in range(20)]
    for i in ids:
        j.update(i, f"dir/g{i}", {"file_id": "g"}, "file")
    assert len(blobs) == 1 and blobs[0].startswith("journal-key:")  # 80 row parts, one blob
    j.close()
    j = Journal(str(p), seal=seal, unseal=c.open_blob)
    assert [r.path for r in j.rows()] == [f"dir/g{i}" for i in ids]
    j.add("file", "later", {})
    j.close()
    db = raw(p)
    keys = db.execute("SELECT k FROM kv WHERE k LIKE 'jkey:%'").fetchall()
    parts = [bytes(path) for (path, data) in db.execute("SELECT path, data FROM pending")]
    parts += [base64.b64decode(data[7:]) for (data,) in db.execute("SELECT data FROM pending")]
    db.close()
    assert len(keys) == 2 and len(blobs) == 2  # the second journal sealed under its own key
    kid_nonce = [part[2:22] for part in parts]  # "J1" | kid (8) | nonce (12) | ...
    assert len(set(kid_nonce)) == len(parts) == 42  # no (key, nonce) pair used twice


def test_row_whose_journal_key_is_gone_or_swapped_is_refused(tmp_path: Path, caplog) -> None:
    p = tmp_path / "journal.sqlite"
    j = sealed_journal(p)
    a = j.add("file", "a", {"file_id": "a"})
    j.close()
    j2 = sealed_journal(p)
    b = j2.add("file", "b", {"file_id": "b"})
    j2.close()
    db = raw(p)
    (ka, va), (kb, vb) = db.execute("SELECT k, v FROM kv WHERE k LIKE 'jkey:%'").fetchall()
    db.execute("UPDATE kv SET v=? WHERE k=?", (vb, ka))  # key blob moved to the other id
    db.execute("UPDATE kv SET v=? WHERE k=?", (va, kb))
    db.close()
    with caplog.at_level(logging.ERROR, logger="s3encfs.journal"):
        assert sealed_journal(p).rows() == []
    refused = " ".join(r.getMessage() for r in caplog.records)
    assert f"journal row {a} refused" in refused and f"journal row {b} refused" in refused


def test_rows_sealed_as_blobs_by_the_previous_version_still_open(tmp_path: Path) -> None:
    """A journal the previous version left (row-bound blobs, marker set), replayed after an
    upgrade; its rows are rewritten under a journal key from then on."""
    p = tmp_path / "journal.sqlite"
    c = codec()
    Journal(str(p), seal=c.seal_blob, unseal=c.open_blob).close()  # tables + marker
    _plant_old_row(p, c, 7, "journal:7:path", "journal:7:data")
    j = sealed_journal(p)
    assert [(r.row_id, r.path, r.data) for r in j.rows()] == [(7, "old/file", {"file_id": "old"})]
    j.update(7, "old/moved", {"file_id": "old"}, "file")
    assert [r.path for r in j.rows()] == ["old/moved"]


def test_an_update_that_keeps_the_path_does_not_seal_it_again(tmp_path: Path) -> None:
    """A row write that keeps the row's path rewrites kind and data only (session 14: one
    AES-GCM seal less per row write); the sealed path still opens for its row after updates,
    a rename's new path is sealed and written, and a removed row's id starts over."""
    p = tmp_path / "journal.sqlite"
    j = sealed_journal(p)
    purposes: list[str] = []
    seal = j._rows.seal

    def counting(purpose: str, plain: bytes) -> bytes:
        purposes.append(purpose)
        return seal(purpose, plain)

    j._rows.seal = counting  # type: ignore[method-assign]
    a = j.add("file", "d/.name.XYZ", {"dirty": "00"})
    stored = "SELECT path FROM pending WHERE id=?"
    before = j._db.conn.execute(stored, (a,)).fetchone()[0]
    for n in range(3):
        j.update(a, "d/.name.XYZ", {"dirty": f"{n:02x}"}, "file")
    assert purposes == [f"journal:{a}:path", f"journal:{a}:data"] + [f"journal:{a}:data"] * 3
    assert j._db.conn.execute(stored, (a,)).fetchone()[0] == before
    j.update(a, "d/name", {"dirty": "ff"}, "meta")  # a rename: the new path is sealed
    assert purposes[-2:] == [f"journal:{a}:path", f"journal:{a}:data"]
    assert [(r.row_id, r.kind, r.path, r.data) for r in j.rows()] == \
        [(a, "meta", "d/name", {"dirty": "ff"})]
    j.update(a, "d/name", {"dirty": "fe"}, "file")
    j.close()
    j2 = sealed_journal(p)  # what is on disk opens in a new journal (a remount's replay)
    assert [(r.row_id, r.kind, r.path, r.data) for r in j2.rows()] == \
        [(a, "file", "d/name", {"dirty": "fe"})]
    j2.update(a, "d/name", {"dirty": "fd"}, "file")  # not written by this object: sealed anew
    j2.remove(a)
    assert j2.rows() == []
    j2.close()
