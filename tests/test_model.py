"""Stateful model test: a real s3encfs mount must stay equal to a local directory.

Hypothesis drives random sequences of file-system operations (create/overwrite, pwrite with
holes, truncate, rename of files and directories, unlink, mkdir, rmdir, chmod, utime, reopen
for append / read-write, remount with or without the local cache).  Every operation runs on
both a plain local directory (the model) and the mount; the outcome (success or errno) must
match, and after every step the two trees must agree on paths, types, sizes, contents
(sha256), permission bits and mtimes (ns).

mtimes: an explicit utime must be kept exactly; any other change of a local mtime (the
kernel's decision, which is the reference) means the mount's mtime must lie in the wall-clock
window of the mount's operation.  If the local mtime did not change, the mount's must not
either.  Expectations follow the local inode, so renames carry them along.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mounting import Mount, keyenv  # noqa: F401

NAMES = ["a", "b", "c"]
MAX_DEPTH = 3
SEG = 64 * 1024
SLACK_NS = 50_000_000  # kernel timestamps come from a coarse clock: allow 50 ms either side
FILE_MODES = [0o600, 0o644, 0o640, 0o755, 0o700, 0o444]
DIR_MODES = [0o755, 0o700, 0o750, 0o775]
MTIMES = [0, 1, 999_999_999, 1_000_000_000, 1_234_567_890_123_456_789,
          1_700_000_000_000_000_001]

# Sizes around the 64 KiB segment boundary matter most; keep the rest small so steps are fast.
LENGTHS = st.one_of(
    st.integers(0, 300),
    st.sampled_from([SEG - 1, SEG, SEG + 1, 2 * SEG, 2 * SEG + 7]),
    st.integers(0, 3 * SEG + 100),
)


def blob(length: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(length)


def _errno_of(fn: Callable[[], Any]) -> tuple[int | None, Any]:
    try:
        return None, fn()
    except OSError as e:
        return e.errno, None


@dataclass
class Ctx:
    s3: Any
    env: dict[str, str]
    tmp: Path
    mode: str
    upload_delay: float = 30.0  # long: uploads happen when a rule asks (deterministic replay)


@dataclass
class Entry:
    kind: str  # "f" | "d"
    mode: int
    size: int
    digest: str
    mtime_ns: int
    ino: int


def scan(root: Path) -> dict[str, Entry]:
    """Every path under root ("" is root itself), with type/mode/size/sha256/mtime/inode."""
    out: dict[str, Entry] = {}

    def visit(rel: str) -> None:
        p = root / rel if rel else root
        st_ = os.lstat(p)
        if stat.S_ISDIR(st_.st_mode):
            out[rel] = Entry("d", stat.S_IMODE(st_.st_mode), 0, "", st_.st_mtime_ns, st_.st_ino)
            for name in sorted(os.listdir(p)):
                visit(f"{rel}/{name}" if rel else name)
        elif stat.S_ISREG(st_.st_mode):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = Entry("f", stat.S_IMODE(st_.st_mode), st_.st_size, digest,
                             st_.st_mtime_ns, st_.st_ino)
        else:
            out[rel] = Entry("?", st_.st_mode, 0, "", st_.st_mtime_ns, st_.st_ino)

    visit("")
    return out


class ModelMachine(RuleBasedStateMachine):
    ctx: Ctx  # set by the factory in run()
    seq = 0

    def __init__(self) -> None:
        super().__init__()
        ctx = self.ctx
        ModelMachine.seq += 1
        n = ModelMachine.seq
        self.bucket = f"model-{os.getpid()}-{ctx.mode}-{n}"
        ctx.s3.create_bucket(Bucket=self.bucket)
        base = ctx.tmp / f"ex{n}"
        self.model = base / "model"
        self.model.mkdir(parents=True)
        os.chmod(self.model, 0o755)
        self.mount = Mount(f"s3://{self.bucket}", base / "mnt", base / "cache", ctx.env,
                           encryption=ctx.mode, log_path=base / "mount.log",
                           extra=["--upload-delay", str(ctx.upload_delay)])
        self.mount.start()
        # the mount root's attributes are ours to set; start both roots equal
        os.chmod(self.mount.mountpoint, 0o755)
        t = 1_600_000_000_000_000_000
        os.utime(self.model, ns=(t, t))
        os.utime(self.mount.mountpoint, ns=(t, t))
        self.expect: dict[int, tuple[int, int]] = {}  # local inode -> [lo, hi] mtime window
        self.prev = scan(self.model)
        for e in self.prev.values():
            self.expect[e.ino] = (e.mtime_ns, e.mtime_ns)
        self.steps = 0
        self.log: list[str] = []

    # -- helpers -------------------------------------------------------------------------------
    @property
    def mnt(self) -> Path:
        return self.mount.mountpoint

    def files(self) -> list[str]:
        return sorted(p for p, e in self.prev.items() if e.kind == "f")

    def dirs(self) -> list[str]:
        return sorted(p for p, e in self.prev.items() if e.kind == "d")

    def parents(self) -> list[str]:
        return [d for d in self.dirs() if (d.count("/") + 1 if d else 0) < MAX_DEPTH]

    def both(self, what: str, fn: Callable[[Path], Any], exact_mtime: int | None = None) -> Any:
        """Run fn on the model, then on the mount; outcomes must match; track mtimes."""
        self.log.append(what)
        e_local, r_local = _errno_of(lambda: fn(self.model))
        t0 = time.time_ns()
        e_mount, r_mount = _errno_of(lambda: fn(self.mnt))
        t1 = time.time_ns()
        try:
            assert e_mount == e_local, (
                f"{what}: local {errno.errorcode.get(e_local or 0, e_local)} vs mount "
                f"{errno.errorcode.get(e_mount or 0, e_mount)}")
            assert r_mount == r_local, f"{what}: result differs: {r_local!r} vs {r_mount!r}"
        except AssertionError as exc:
            self.fail_report(exc)
            raise
        cur = scan(self.model)
        prev_by_ino = {e.ino: e for e in self.prev.values()}
        for e in cur.values():
            old = prev_by_ino.get(e.ino)
            if old is not None and old.mtime_ns == e.mtime_ns:
                lo, hi = self.expect[e.ino]
                if lo != hi:  # a window: a second change within one coarse tick is possible
                    self.expect[e.ino] = (lo, max(hi, t1 + SLACK_NS))
            elif exact_mtime is not None and e.mtime_ns == exact_mtime:
                self.expect[e.ino] = (exact_mtime, exact_mtime)
            else:
                self.expect[e.ino] = (t0 - SLACK_NS, t1 + SLACK_NS)
        self.prev = cur
        return r_local

    def fail_report(self, exc: BaseException) -> None:
        """Hypothesis may hide the first failure behind a Flaky error: print it."""
        print(f"\n=== model failure ({self.ctx.mode}): {exc}\n--- steps:\n  "
              + "\n  ".join(self.log) + f"\n--- mount log tail:\n{self.mount.read_log()}")

    def compare(self) -> None:
        try:
            self._compare()
        except (AssertionError, OSError) as e:
            self.fail_report(e)
            raise

    def _compare(self) -> None:
        local = self.prev
        remote = scan(self.mnt)
        hist = "\n  ".join(self.log[-40:])
        assert sorted(remote) == sorted(local), f"paths differ after:\n  {hist}"
        for p, le in local.items():
            re_ = remote[p]
            assert re_.kind == le.kind, f"{p!r}: type {re_.kind} != {le.kind}\n  {hist}"
            assert re_.mode == le.mode, f"{p!r}: mode {re_.mode:o} != {le.mode:o}\n  {hist}"
            if le.kind == "f":
                assert re_.size == le.size, f"{p!r}: size {re_.size} != {le.size}\n  {hist}"
                assert re_.digest == le.digest, f"{p!r}: contents differ\n  {hist}"
            lo, hi = self.expect[le.ino]
            assert lo <= re_.mtime_ns <= hi, (
                f"{p or '/'!r}: mtime {re_.mtime_ns} not in [{lo}, {hi}] "
                f"(local {le.mtime_ns})\n  {hist}")

    # -- rules ---------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        self.compare()

    @rule(data=st.data(), length=LENGTHS, seed=st.integers(0, 2**16))
    def write_file(self, data: st.DataObject, length: int, seed: int) -> None:
        """Create a new file or overwrite an existing one (O_CREAT|O_TRUNC)."""
        parent = data.draw(st.sampled_from(self.parents()), label="parent")
        name = data.draw(st.sampled_from(NAMES), label="name")
        rel = f"{parent}/{name}" if parent else name
        body = blob(length, seed)

        def op(root: Path) -> None:
            with open(root / rel, "wb") as f:
                f.write(body)

        self.both(f"write {rel} len={length} seed={seed}", op)

    @precondition(lambda self: bool(self.files()))
    @rule(data=st.data(), length=st.integers(1, SEG + 10), seed=st.integers(0, 2**16))
    def pwrite(self, data: st.DataObject, length: int, seed: int) -> None:
        rel = data.draw(st.sampled_from(self.files()), label="file")
        size = self.prev[rel].size
        off = data.draw(st.one_of(st.integers(0, size + 10), st.integers(0, size + 2 * SEG + 10),
                                  st.sampled_from([SEG - 1, SEG, 2 * SEG])), label="offset")
        body = blob(length, seed)

        def op(root: Path) -> int:
            fd = os.open(root / rel, os.O_WRONLY)
            try:
                return os.pwrite(fd, body, off)
            finally:
                os.close(fd)

        self.both(f"pwrite {rel} off={off} len={length} seed={seed}", op)

    @precondition(lambda self: bool(self.files()))
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(self.files()), label="file")
        size = self.prev[rel].size
        # a truncate to the current size changes nothing under POSIX (ext4 still bumps mtime;
        # the kernel's FUSE write-back cache does not, see docs/SEMANTICS.md): not compared
        new = data.draw(st.one_of(st.integers(0, size), st.integers(0, size + 2 * SEG + 10),
                                  st.sampled_from([0, SEG - 1, SEG, SEG + 1]))
                        .filter(lambda n: n != size), label="size")
        self.both(f"truncate {rel} {new}", lambda root: os.truncate(root / rel, new))

    @precondition(lambda self: bool(self.files()))
    @rule(data=st.data(), length=st.integers(0, SEG + 10), seed=st.integers(0, 2**16),
          append=st.booleans())
    def reopen(self, data: st.DataObject, length: int, seed: int, append: bool) -> None:
        """Open an existing file for append or read-write, write, read back through the fd."""
        rel = data.draw(st.sampled_from(self.files()), label="file")
        size = self.prev[rel].size
        off = data.draw(st.integers(0, size + 100), label="offset")
        body = blob(length, seed)

        def op(root: Path) -> str:
            flags = (os.O_WRONLY | os.O_APPEND) if append else os.O_RDWR
            fd = os.open(root / rel, flags)
            try:
                if not append:
                    os.lseek(fd, off, os.SEEK_SET)
                os.write(fd, body)
                if append:
                    return ""
                os.lseek(fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return hashlib.sha256(b"".join(chunks)).hexdigest()
            finally:
                os.close(fd)

        how = "append" if append else f"rw off={off}"
        self.both(f"reopen {rel} {how} len={length} seed={seed}", op)

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        src = data.draw(st.sampled_from([p for p in sorted(self.prev) if p]
                                        or [NAMES[0]]), label="src")
        parent = data.draw(st.sampled_from(self.parents()), label="dst_parent")
        name = data.draw(st.sampled_from(NAMES), label="dst_name")
        dst = f"{parent}/{name}" if parent else name
        self.both(f"rename {src} -> {dst}", lambda root: os.rename(root / src, root / dst))

    @precondition(lambda self: bool(self.files()))
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(self.files()), label="file")
        self.both(f"unlink {rel}", lambda root: os.unlink(root / rel))

    @rule(data=st.data(), mode=st.sampled_from(DIR_MODES))
    def mkdir(self, data: st.DataObject, mode: int) -> None:
        parent = data.draw(st.sampled_from(self.parents()), label="parent")
        name = data.draw(st.sampled_from(NAMES), label="name")
        rel = f"{parent}/{name}" if parent else name
        self.both(f"mkdir {rel} {mode:o}", lambda root: os.mkdir(root / rel, mode))

    @precondition(lambda self: len(self.dirs()) > 1)
    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from([d for d in self.dirs() if d]), label="dir")
        self.both(f"rmdir {rel}", lambda root: os.rmdir(root / rel))

    @rule(data=st.data())
    def chmod(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.prev)), label="path")
        modes = DIR_MODES if self.prev[rel].kind == "d" else FILE_MODES
        mode = data.draw(st.sampled_from(modes), label="mode")
        self.both(f"chmod {rel or '/'} {mode:o}", lambda root: os.chmod(root / rel, mode))

    @rule(data=st.data(), mtime=st.one_of(st.sampled_from(MTIMES),
                                          st.integers(0, 2_000_000_000 * 10**9)))
    def utime(self, data: st.DataObject, mtime: int) -> None:
        rel = data.draw(st.sampled_from(sorted(self.prev)), label="path")
        self.both(f"utime {rel or '/'} {mtime}",
                  lambda root: os.utime(root / rel, ns=(mtime, mtime)), exact_mtime=mtime)

    @precondition(lambda self: bool(self.files()))
    @rule(data=st.data())
    def fsync_file(self, data: st.DataObject) -> None:
        """Upload one file now (fsync waits until it is in S3)."""
        rel = data.draw(st.sampled_from(self.files()), label="file")
        self.log.append(f"fsync {rel}")
        fd = os.open(self.mnt / rel, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @rule()
    def sync_all(self) -> None:
        """fsync of a directory uploads everything pending in the mount."""
        self.log.append("fsync-dir (all uploads)")
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @rule(wipe_cache=st.booleans())
    def remount(self, wipe_cache: bool) -> None:
        self.log.append(f"remount wipe_cache={wipe_cache}")
        self.mount.umount()
        if wipe_cache:
            shutil.rmtree(self.mount.cache_dir)
        self.mount.start()

    @invariant()
    def trees_equal(self) -> None:
        self.compare()

    def teardown(self) -> None:
        try:
            self.mount.stop()
        finally:
            _delete_bucket(self.ctx.s3, self.bucket)


def _delete_bucket(s3: Any, name: str) -> None:
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                s3.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        for u in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=name)
    except Exception:
        pass


def run_model(ctx: Ctx, max_examples: int, steps: int) -> None:
    """max_examples sequences of up to `steps` rules, each on a fresh bucket and mount."""
    machine = type("Machine", (ModelMachine,), {"ctx": ctx})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck), print_blob=True, database=None))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_model(mode: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
               tmp_path: Path) -> None:
    run_model(Ctx(s3, keyenv, tmp_path, mode), max_examples=12, steps=30)


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_model_heavy(mode: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                     tmp_path: Path) -> None:
    run_model(Ctx(s3, keyenv, tmp_path, mode), max_examples=60, steps=60)


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_model_racing_uploads(mode: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                              tmp_path: Path) -> None:
    """Uploads start 50 ms after close, racing the next operations (failures may not replay)."""
    run_model(Ctx(s3, keyenv, tmp_path, mode, upload_delay=0.05), max_examples=60, steps=60)


# -- regressions found by the model ------------------------------------------------------------
from mounting import mount_factory  # noqa: E402, F401


def _keys(s3: Any, bucket: str) -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


@pytest.mark.parametrize("then", ["unlink", "rename", "replace_again"])
def test_rename_over_uploaded_then_unlink_before_upload(then: str, s3: Any, bucket: str,
                                                         mount_factory: Any) -> None:  # noqa: F811
    """rename(new, old) where old is in S3 and new is not yet uploaded, then unlink/rename the
    result before its upload: the old object must not come back."""
    m = mount_factory(bucket, "none", extra=["--upload-delay", "5"])
    (m.mountpoint / "c").write_bytes(b"old")
    m.umount()
    m.start()
    (m.mountpoint / "b").write_bytes(b"new")
    os.rename(m.mountpoint / "b", m.mountpoint / "c")
    if then == "unlink":
        os.unlink(m.mountpoint / "c")
        want: list[str] = []
    elif then == "rename":
        os.rename(m.mountpoint / "c", m.mountpoint / "d")
        want = ["d"]
    else:  # a second rename-over onto the not yet uploaded replacement
        (m.mountpoint / "a").write_bytes(b"new")
        os.rename(m.mountpoint / "a", m.mountpoint / "c")
        want = ["c"]
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.start()
    assert sorted(os.listdir(m.mountpoint)) == want  # no resurrected object, no conflict copy
    for name in want:
        assert (m.mountpoint / name).read_bytes() == b"new"


@pytest.mark.parametrize("mode", ["none", "client"])
@pytest.mark.parametrize("sync_first", [True, False])
def test_dir_rename_keeps_subdir_attrs(mode: str, sync_first: bool, s3: Any, bucket: str,
                                       mount_factory: Any) -> None:  # noqa: F811
    """Renaming a directory must keep the mode and mtime of the directories inside it."""
    m = mount_factory(bucket, mode, extra=["--upload-delay", "30"])
    mp = m.mountpoint
    os.mkdir(mp / "a")
    os.mkdir(mp / "a" / "c", 0o700)
    os.chmod(mp / "a" / "c", 0o700)
    os.utime(mp / "a" / "c", ns=(1, 1_234_567_890_123_456_789))
    if sync_first:
        fd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    os.rename(mp / "a", mp / "b")
    os.listdir(mp / "b")  # a fresh listing of the moved directory (before its index is rewritten)

    def check(when: str) -> None:
        st_ = os.stat(mp / "b" / "c")
        got = (stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
        assert got == (0o700, 1_234_567_890_123_456_789), when

    check("after rename")
    m.umount()
    m.start()
    check("after remount")
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.start()
    check("after remount without cache")


@pytest.mark.parametrize("what", ["chmod", "utime"])
def test_attr_change_during_upload_is_kept(what: str, s3: Any, bucket: str,
                                           mount_factory: Any) -> None:  # noqa: F811
    """chmod/utime while the file's upload is in flight must reach S3 (it used to be dropped:
    the finished upload cleared the pending state and nothing rewrote the metadata)."""
    m = mount_factory(bucket, "none", extra=["--upload-delay", "0"])
    mp = m.mountpoint
    (mp / "f").write_bytes(random.Random(1).randbytes(24 << 20))  # upload takes a while
    time.sleep(0.1)
    if what == "utime":
        os.utime(mp / "f", ns=(1, 2916))
    else:
        os.chmod(mp / "f", 0o600)
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.start()
    st_ = os.stat(mp / "f")
    if what == "utime":
        assert st_.st_mtime_ns == 2916
    else:
        assert stat.S_IMODE(st_.st_mode) == 0o600
