"""Issue 11 item 3: a model test of the filesystem layer without a kernel mount.

The `fs/operations.py` handlers (the FUSE interface, which the split of fs/core.py keeps) are
called directly from trio, against the real SeaweedFS, with random sequences of create, write,
pwrite with holes, truncate, ftruncate, rename (files over files, directories), unlink, mkdir,
rmdir, chmod, utime, fsync, flush, and two kinds of restart: a *crash* (the filesystem is
dropped without uploading: every closed file is only in the journal and the staging files,
uploads still running in worker threads land or not; the next instance replays on the same
cache directory) and a clean stop followed by a *cold* start on a new, empty cache directory
(everything must then come from S3).  After each restart, and at the end, every path, type,
size, byte and explicitly set mode/mtime must equal a dictionary model.

No kernel: no page cache, no writeback cache, no forget() — what this checks is the layer
beneath, at far more operations per second than tests/test_model.py (kept: it is the one that
sees the kernel).  Uploads run with a short delay so they interleave with the operations.
"""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio

from s3encfs.codec import Codec, IdentityCodec
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.fs.operations import Operations
from s3encfs.store.s3 import ObjectStore

SEG = 64 * 1024
ROOT = pyfuse3.ROOT_INODE
CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), umask=0, pid=os.getpid())
NAMES = ["a", "b", "c", "d"]
DIRS = ["x", "y"]
LENGTHS = [0, 1, 100, SEG - 1, SEG, SEG + 1, 2 * SEG + 7, 3 * SEG + 100]
FILE_MODES = [0o600, 0o644, 0o640, 0o755]
MTIMES = [1, 1_000_000_000, 1_234_567_890_123_456_789]
# per seed: operations, then the restarts among them; sized for ~1 min per mode in `make test`
STEPS = int(os.environ.get("S3ENCFS_MODEL_STEPS", "150"))
SEEDS = [int(s) for s in os.environ.get("S3ENCFS_MODEL_SEEDS", "1,2").split(",")]


def blob(n: int, rng: random.Random) -> bytes:
    return rng.randbytes(n)


@dataclass
class FileModel:
    data: bytearray = field(default_factory=bytearray)
    mode: int = 0o644
    mtime_ns: int | None = None  # known only after an explicit utime (and no write since)


class Model:
    def __init__(self) -> None:
        self.files: dict[str, FileModel] = {}
        self.dirs: set[str] = {""}

    def children(self, d: str) -> set[str]:
        pre = d + "/" if d else ""
        out = set()
        for p in [*self.files, *self.dirs]:
            if p and p.startswith(pre) and "/" not in p[len(pre):]:
                out.add(p[len(pre):])
        return out

    def rename_dir(self, old: str, new: str) -> None:
        for p in sorted(self.dirs):
            if p == old or p.startswith(old + "/"):
                self.dirs.discard(p)
                self.dirs.add(new + p[len(old):])
        for p in list(self.files):
            if p.startswith(old + "/"):
                self.files[new + p[len(old):]] = self.files.pop(p)


def fields(**on: bool) -> SimpleNamespace:
    names = ("mode", "uid", "gid", "size", "atime", "mtime", "ctime", "atime_now", "mtime_now")
    return SimpleNamespace(**{f"update_{n}": on.get(n, False) for n in names})


class Driver:
    """Path-level calls on an `Operations` instance, the way the kernel would make them."""

    def __init__(self, ops: Operations):
        self.ops = ops

    async def ino(self, path: str) -> int:
        ino = ROOT
        for part in [p for p in path.split("/") if p]:
            e = await self.ops.lookup(ino, os.fsencode(part), CTX)
            if e.st_ino == 0:
                raise pyfuse3.FUSEError(errno.ENOENT)
            ino = e.st_ino
        return ino

    async def split(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rpartition("/")
        return await self.ino(head), os.fsencode(name)

    async def open_write(self, path: str, exists: bool) -> int:
        if exists:
            return (await self.ops.open(await self.ino(path), os.O_RDWR, CTX)).fh
        parent, name = await self.split(path)
        fi, _e = await self.ops.create(parent, name, stat.S_IFREG | 0o644, os.O_RDWR, CTX)
        return fi.fh

    async def read_all(self, path: str, size: int) -> bytes:
        fh = (await self.ops.open(await self.ino(path), os.O_RDONLY, CTX)).fh
        try:
            out = bytearray()
            while True:  # the kernel reads in pieces of at most 128 KiB (max_read)
                chunk = await self.ops.read(fh, len(out), 128 * 1024)
                if not chunk:
                    return bytes(out)
                out += chunk
                if len(out) > size + SEG:
                    return bytes(out)
        finally:
            await self.ops.release(fh)

    async def setattr(self, path: str, **kw: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        on = {}
        for k, v in kw.items():
            setattr(a, {"mode": "st_mode", "size": "st_size", "mtime": "st_mtime_ns"}[k], v)
            on[k] = True
        if "mtime" in kw:
            a.st_atime_ns = kw["mtime"]
            on["atime"] = True
        return await self.ops.setattr(await self.ino(path), a, fields(**on), None, CTX)

    async def listdir(self, path: str) -> set[str]:
        fh = await self.ops.opendir(await self.ino(path), CTX)
        names: list[bytes] = []
        try:
            await self.ops.readdir(fh, 0, names)
        finally:
            await self.ops.releasedir(fh)
        return {os.fsdecode(n) for n in names} - {".", ".."}


@asynccontextmanager
async def filesystem(store: ObjectStore, codec: Codec, prefix: str, cache_dir: Path,
                     crash: list[bool], upload_delay: float = 0.05) -> AsyncIterator[Driver]:
    """One filesystem instance, started as `mount_serve.serve` starts it.  On exit: a clean stop
    (flush everything, like umount) or, if `crash[0]` is set then, a crash: the upload loop
    is cancelled and the instance dropped with whatever is still only in the journal."""
    cfg = FsConfig(cache_dir=str(cache_dir), upload_delay=upload_delay, uid=CTX.uid, gid=CTX.gid)
    core = FsCore(store, codec, prefix, cfg)
    try:
        await core.replay()
        await core.load_root()
        async with trio.open_nursery() as nursery:
            core.nursery = nursery
            nursery.start_soon(core.upload_loop)
            yield Driver(Operations(core))
            if not crash[0]:
                with trio.fail_after(120):
                    await core.flush_all()
                    await core.abort_leftover_uploads()
            nursery.cancel_scope.cancel()
    finally:
        core.journal.close()
        core.pool.shutdown(wait=True)


class Run:
    def __init__(self, rng: random.Random, fs: Driver, model: Model):
        self.rng, self.fs, self.m = rng, fs, model

    def any_dir(self) -> str:
        return self.rng.choice(sorted(self.m.dirs))

    def new_path(self) -> str:
        d = self.any_dir()
        return f"{d}/{self.rng.choice(NAMES)}" if d else self.rng.choice(NAMES)

    def any_file(self) -> str | None:
        return self.rng.choice(sorted(self.m.files)) if self.m.files else None

    async def step(self) -> str:
        r, m, fs = self.rng, self.m, self.fs
        op = r.choices(["write", "pwrite", "truncate", "ftruncate", "rename", "unlink", "mkdir",
                        "rmdir", "rename_dir", "chmod", "utime", "fsync", "read"],
                       [6, 5, 3, 2, 3, 2, 2, 1, 1, 2, 2, 1, 2])[0]
        path = self.new_path()
        if op in ("write", "pwrite") and path not in m.dirs:
            exists = path in m.files
            if op == "pwrite" and not exists:
                op = "write"
            f = m.files.get(path) or FileModel()
            fh = await fs.open_write(path, exists)
            if op == "write":  # O_TRUNC, then one sequential write
                if exists and f.data:
                    await fs.setattr(path, size=0)
                f.data = bytearray()
                off = 0
            else:
                off = r.choice([0, len(f.data), len(f.data) + r.choice([1, SEG]),
                                r.randrange(len(f.data) + 1)])
            data = blob(r.choice(LENGTHS), r)
            assert await fs.ops.write(fh, off, data) == len(data)
            if len(f.data) < off:
                f.data += bytes(off - len(f.data))
            f.data[off:off + len(data)] = data
            f.mtime_ns = None
            if r.random() < 0.3:
                await fs.ops.flush(fh)
            await fs.ops.release(fh)
            m.files[path] = f
            return f"{op} {path} @{off} +{len(data)}"
        path = self.any_file() or ""
        if op in ("truncate", "ftruncate") and path:
            f = m.files[path]
            size = r.choice([0, len(f.data) // 2, len(f.data) + r.choice([1, SEG + 3])])
            if op == "ftruncate":
                fh = await fs.open_write(path, True)
                await fs.setattr(path, size=size)
                await fs.ops.release(fh)
            else:
                await fs.setattr(path, size=size)
            f.data = f.data[:size] + bytes(max(0, size - len(f.data)))
            f.mtime_ns = None
            return f"{op} {path} {size}"
        if op == "rename" and path:
            to = self.new_path()
            if to in m.dirs or to == path:
                return "skip"
            (p1, n1), (p2, n2) = await fs.split(path), await fs.split(to)
            await fs.ops.rename(p1, n1, p2, n2, 0, CTX)
            m.files[to] = m.files.pop(path)
            return f"rename {path} {to}"
        if op == "unlink" and path:
            p, n = await fs.split(path)
            await fs.ops.unlink(p, n, CTX)
            del m.files[path]
            return f"unlink {path}"
        if op == "chmod" and path:
            mode = r.choice(FILE_MODES)
            await fs.setattr(path, mode=stat.S_IFREG | mode)
            m.files[path].mode = mode
            return f"chmod {path} {mode:o}"
        if op == "utime" and path:
            t = r.choice(MTIMES)
            await fs.setattr(path, mtime=t)
            m.files[path].mtime_ns = t
            return f"utime {path} {t}"
        if op == "fsync" and path:
            fh = await fs.open_write(path, True)
            await fs.ops.fsync(fh, False)
            await fs.ops.release(fh)
            return f"fsync {path}"
        if op == "read" and path:
            got = await fs.read_all(path, len(m.files[path].data))
            assert got == bytes(m.files[path].data), f"read {path}"
            return f"read {path}"
        if op == "mkdir":
            parent = r.choice([d for d in sorted(m.dirs) if d.count("/") < 1])
            d = f"{parent}/{r.choice(DIRS)}" if parent else r.choice(DIRS)
            if d in m.dirs or d in m.files:
                return "skip"
            p, n = await fs.split(d)
            await fs.ops.mkdir(p, n, stat.S_IFDIR | 0o755, CTX)
            m.dirs.add(d)
            return f"mkdir {d}"
        if op == "rmdir" and len(m.dirs) > 1:
            d = r.choice(sorted(m.dirs - {""}))
            p, n = await fs.split(d)
            try:
                await fs.ops.rmdir(p, n, CTX)
            except pyfuse3.FUSEError as exc:
                assert exc.errno == errno.ENOTEMPTY and m.children(d), (d, exc.errno)
                return f"rmdir {d}: ENOTEMPTY"
            assert not m.children(d), f"rmdir of non-empty {d} succeeded"
            m.dirs.discard(d)
            return f"rmdir {d}"
        if op == "rename_dir" and len(m.dirs) > 1:
            d = r.choice(sorted(m.dirs - {""}))
            new = r.choice([*DIRS, "z"])
            to = f"{d.rpartition('/')[0]}/{new}".lstrip("/")
            if to in m.dirs or to in m.files:
                return "skip"
            (p1, n1), (p2, n2) = await fs.split(d), await fs.split(to)
            await fs.ops.rename(p1, n1, p2, n2, 0, CTX)
            m.rename_dir(d, to)
            return f"rename_dir {d} {to}"
        return "skip"


async def check(fs: Driver, m: Model, when: str) -> None:
    """The whole tree equals the model: names, types, sizes, bytes, modes, set mtimes."""
    for d in sorted(m.dirs):
        assert await fs.listdir(d) == m.children(d), f"{when}: listing of {d!r}"
    for path, f in sorted(m.files.items()):
        e = await fs.ops.getattr(await fs.ino(path), CTX)
        assert stat.S_ISREG(e.st_mode), f"{when}: {path} is not a file"
        assert e.st_size == len(f.data), f"{when}: size of {path}"
        assert stat.S_IMODE(e.st_mode) == f.mode, f"{when}: mode of {path}"
        if f.mtime_ns is not None:
            assert e.st_mtime_ns == f.mtime_ns, f"{when}: mtime of {path}"
        got = await fs.read_all(path, len(f.data))
        assert got == bytes(f.data), f"{when}: bytes of {path}"


async def run_model(store: ObjectStore, codec: Codec, cache_root: Path, seed: int) -> list[str]:
    prefix = f"seed{seed}/"
    rng = random.Random(seed)
    model = Model()
    log: list[str] = []
    generation = 0
    step = 0
    while step < STEPS:
        cache = cache_root / f"cache{generation}"
        crash = [False]
        async with filesystem(store, codec, prefix, cache, crash) as fs:
            if step:
                await check(fs, model, f"seed {seed} after {log[-1]}; history: {log[-60:]}")
            for _ in range(rng.randrange(10, 40)):
                step += 1
                try:
                    log.append(await Run(rng, fs, model).step())
                except Exception as exc:
                    raise AssertionError(f"seed {seed} step {step}; history: {log}") from exc
                if step >= STEPS:
                    break
            crash[0] = rng.random() < 0.6 and step < STEPS
            log.append("crash" if crash[0] else "stop")
        if not crash[0] and rng.random() < 0.5:
            generation += 1  # cold: an empty cache directory, everything from S3
            log.append("cold start")
    async with filesystem(store, codec, prefix, cache_root / "final", [False]) as fs:
        await check(fs, model, f"seed {seed} cold, at the end")
    return log


def make_codec(mode: str) -> Codec:
    if mode == "none":
        return IdentityCodec()
    from s3encfs.crypto.client_codec import ClientCodec

    return ClientCodec({"k1": bytes(range(32))}, "k1")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_filesystem_layer_equals_a_dict_model(mode: str, s3server: Any, bucket: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    # readdir answers through pyfuse3.readdir_reply(token, ...): the token is a list here
    def reply(token: list[bytes], name: bytes, attr: Any, next_id: int) -> bool:
        token.append(name)
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    for seed in SEEDS:
        store = ObjectStore(bucket, endpoint_url=s3server.endpoint)
        log = trio.run(run_model, store, make_codec(mode), tmp_path / f"s{seed}", seed)
        done = [x for x in log if x != "skip"]
        print(f"seed {seed}: {len(done)} steps:", "; ".join(done))
        assert len(done) > STEPS // 2
