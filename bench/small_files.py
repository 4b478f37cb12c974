"""W4 in process (no FUSE): CPU per small file of rsync's request sequence, plain vs client/s3ec.

    python -m bench.small_files [--tree /usr/include/linux] [--files 2000] [--rounds 2]
                                [--modes plain,client,s3ec] [--profile N] [--count]

Each round, for each mode in turn (alternating, so the machine's load hits both alike): a fresh
bucket and cache, then `fs/operations.Operations` is driven with the requests rsync's receiver
makes per file — lookup ×2 (the name, its temp name: both absent), create of the temp name,
write, the mtime setattr, flush, release, chmod, rename onto the name, lookup — for the first
`--files` files of `--tree` (directories made as met), then `flush_all` (every upload in S3).
CPU is the process's (`time.process_time`: trio, S3 workers, the CRT's threads); SeaweedFS runs
in other processes and is not counted. `--count` counts the client codec's crypto calls per
file (key derivations, AES contexts, name encryptions/decryptions, attribute seals/opens).
`--versioned both` runs each mode on an unversioned, then a versioned bucket; each line has the
server's CPU over the run (`server_cpu_s`); env `BENCH_UNCONDITIONAL=1` mounts with conditional
writes off (to tell what `If-None-Match` costs the server).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import errno
import os
import pstats
import resource
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), umask=0o022, pid=os.getpid())
ROOT = 1


def tree_files(tree: Path, limit: int) -> list[tuple[str, bytes, int, int]]:
    """(relative path, bytes, mode, mtime_ns) of the first `limit` regular files, sorted."""
    out = []
    for dirpath, dirs, files in os.walk(tree):
        dirs.sort()
        for f in sorted(files):
            p = Path(dirpath) / f
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                out.append((str(p.relative_to(tree)), p.read_bytes(), st.st_mode & 0o7777,
                            st.st_mtime_ns))
            if len(out) >= limit:
                return out
    return out


def _fields(**on: bool) -> SimpleNamespace:
    names = ("mode", "uid", "gid", "size", "atime", "mtime", "ctime", "atime_now", "mtime_now")
    return SimpleNamespace(**{f"update_{n}": on.get(n, False) for n in names})


async def _dir(ops: Any, dirs: dict[str, int], rel: str) -> int:
    """The inode of directory `rel` (made, like rsync's mkdir, when first met)."""
    if rel in dirs:
        return dirs[rel]
    head, _, name = rel.rpartition("/")
    parent = await _dir(ops, dirs, head)
    e = await ops.mkdir(parent, os.fsencode(name), stat.S_IFDIR | 0o755, CTX)
    dirs[rel] = e.st_ino
    return e.st_ino


async def rsync_file(ops: Any, parent: int, name: str, data: bytes, mode: int,
                     mtime_ns: int) -> None:
    import pyfuse3

    tmp = f".{name}.Ab12Cd"
    for n in (name, tmp):
        e = await ops.lookup(parent, os.fsencode(n), CTX)
        assert e.st_ino == 0, n
    fi, e = await ops.create(parent, os.fsencode(tmp), stat.S_IFREG | 0o600, os.O_WRONLY, CTX)
    if data:
        await ops.write(fi.fh, 0, data)
    a = pyfuse3.EntryAttributes()
    a.st_mtime_ns = a.st_atime_ns = mtime_ns
    await ops.setattr(e.st_ino, a, _fields(mtime=True, atime=True), fi.fh, CTX)
    await ops.flush(fi.fh)
    await ops.release(fi.fh)
    a = pyfuse3.EntryAttributes()
    a.st_mode = stat.S_IFREG | mode
    await ops.setattr(e.st_ino, a, _fields(mode=True), None, CTX)
    await ops.rename(parent, os.fsencode(tmp), parent, os.fsencode(name), 0, CTX)
    e = await ops.lookup(parent, os.fsencode(name), CTX)
    if e.st_ino == 0:
        raise OSError(errno.ENOENT, name)


KEK = bytes(range(32))  # s3ec: the raw AES keyring's key (as `make bench`'s s3ec-aes key)


def codec_for(mode: str) -> Any:
    from s3encfs.codec import IdentityCodec
    from s3encfs.crypto.client_codec import ClientCodec

    if mode == "plain":
        return IdentityCodec()
    if mode == "s3ec":
        from s3encfs.crypto.s3ec_codec import S3ECCodec

        return S3ECCodec()
    return ClientCodec({"k1": bytes(range(32))}, "k1", name_scheme=2)


def one_run(endpoint: str, bucket: str, cache: str, mode: str,
            files: list[tuple[str, bytes, int, int]], prof: cProfile.Profile | None) -> float:
    """CPU seconds of the whole sequence for `files`, through `flush_all`."""
    from s3encfs.fs.core import FsConfig, FsCore
    from s3encfs.fs.operations import Operations
    from s3encfs.server import REGION
    from s3encfs.store.s3 import ObjectStore

    args: dict[str, Any] = {"endpoint_url": endpoint, "region": REGION, "s3_client": "crt"}
    if mode == "s3ec":
        from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
        from s3encfs.store.s3ec import S3ECStore

        store: ObjectStore = S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("bench", KEK, {})]),
                                       spool_dir=os.path.join(cache, "s3ec"), **args)
    else:
        store = ObjectStore(bucket, **args)
    core = FsCore(store, codec_for(mode), "", FsConfig(
        cache_dir=cache, uid=CTX.uid, gid=CTX.gid,
        conditional_writes=os.environ.get("BENCH_UNCONDITIONAL") != "1"))

    async def main() -> None:
        await core.replay()
        await core.load_root()
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            ops = Operations(core)
            dirs = {"": ROOT}
            for rel, data, fmode, mtime in files:
                head, _, name = rel.rpartition("/")
                await rsync_file(ops, await _dir(ops, dirs, head), name, data, fmode, mtime)
            await core.flush_all()
            nursery.cancel_scope.cancel()

    c, w, srv = time.process_time(), time.monotonic(), server_cpu()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    if prof is not None:
        others = profile_threads()
        prof.runcall(trio.run, main)
        threading.setprofile(None)  # type: ignore[arg-type]
    else:
        trio.run(main)
    cpu = time.process_time() - c
    COUNTS.clear()
    COUNTS.update({"wall_s": round(time.monotonic() - w, 2),
                   "server_cpu_s": round(server_cpu() - srv, 2),
                   "journal_writes": core.journal.writes,
                   "loop_passes": core.stats.get("upload_loop_passes", 0),
                   "uploads": core.stats.get("uploads", 0),
                   "requests": dict(core.store.stats.as_dict()["requests"])})
    THREADS.clear()
    THREADS.update(thread_cpu())
    ru2 = resource.getrusage(resource.RUSAGE_SELF)
    SWITCHES[:] = [ru2.ru_nvcsw - ru.ru_nvcsw, ru2.ru_nivcsw - ru.ru_nivcsw]
    core.close()
    if prof is not None:
        core.pool.shutdown(wait=True)
        PROFILES.extend(others)
    return cpu


PROFILES: list[cProfile.Profile] = []
COUNTS: dict[str, float] = {}  # wall seconds and the core's counters of the last run
SWITCHES = [0, 0]  # voluntary, involuntary context switches of the last run
THREADS: dict[str, float] = {}  # CPU seconds by thread name (digits dropped) of the last run


def server_cpu() -> float:
    """CPU seconds of this process's child processes so far (the SeaweedFS server), Linux."""
    tick, me, total = os.sysconf("SC_CLK_TCK"), str(os.getpid()), 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        if rest[1] == me:
            total += (int(rest[11]) + int(rest[12])) / tick
    return total


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's live threads, summed by name without digits (Linux)."""
    out: collections.Counter[str] = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        rest = text[text.rindex(")") + 2:].split()
        out["".join(ch for ch in comm if not ch.isdigit())] += \
            (int(rest[11]) + int(rest[12])) / tick
    return dict(out)  # the S3 worker threads' profiles of the last run


def profile_threads() -> list[cProfile.Profile]:
    """A cProfile of its own for every thread started from now on (the S3 workers)."""
    out: list[cProfile.Profile] = []

    def start(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time)
        out.append(p)
        p.enable()

    threading.setprofile(start)
    return out


COUNTED = {  # (module path, attribute): what a client-mode file costs in crypto calls
    "hkdf": ("s3encfs.crypto.envelope", "hkdf"),
    "unwrap": ("s3encfs.crypto.envelope", "unwrap_data_key"),
    "wrap": ("s3encfs.crypto.envelope", "wrap_data_key"),
    "seal_attrs": ("s3encfs.crypto.envelope", "seal_attrs"),
    "open_attrs": ("s3encfs.crypto.envelope", "open_attrs"),
    "seal_blob": ("s3encfs.crypto.blobs", "seal_blob"),
    "open_blob": ("s3encfs.crypto.blobs", "open_blob"),
}


def count_calls() -> collections.Counter[str]:
    """Wrap the envelope's functions (and the name cipher's AES-SIV calls) with counters."""
    import importlib

    from s3encfs.crypto import names

    counts: collections.Counter[str] = collections.Counter()

    def wrap(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*a: Any, **kw: Any) -> Any:
            counts[label] += 1
            return fn(*a, **kw)
        return counted

    for label, (mod, attr) in COUNTED.items():
        m = importlib.import_module(mod)
        setattr(m, attr, wrap(label, getattr(m, attr)))
    names.NameCipher._encode = wrap("name_encrypt", names.NameCipher._encode)  # type: ignore
    for attr in ("decode_name", "_decode2"):
        setattr(names.NameCipher, attr, wrap(f"name_{attr}", getattr(names.NameCipher, attr)))
    return counts


def _server(tmp: str) -> Iterator[str]:
    from s3encfs.server import SeaweedS3

    server = SeaweedS3(Path(tmp) / "srv")
    server.start()
    os.environ.update(server.env())
    try:
        yield server.endpoint
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default="/usr/include")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="plain,client")
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions")
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--dump", help="with --profile: also write pstats to DUMP.<mode>.<round>")
    ap.add_argument("--versioned", default="no", choices=("no", "yes", "both"),
                    help="bucket versioning; both: each mode on an unversioned, then a "
                         "versioned bucket, alternating")
    args = ap.parse_args()
    files = tree_files(Path(args.tree), args.files)
    counts = count_calls() if args.count else None
    import boto3

    from s3encfs.server import REGION

    with tempfile.TemporaryDirectory(prefix="s3encfs-small-") as tmp:
        gen = _server(tmp)
        endpoint = next(gen)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        try:
            for r in range(args.rounds):
                for mode, vers in [(m, v) for m in args.modes.split(",") for v in
                                   {"no": [False], "yes": [True], "both": [False, True]}[
                                       args.versioned]]:
                    bucket = f"small-{mode}-{'v' if vers else 'u'}{r}-{os.getpid()}"
                    s3.create_bucket(Bucket=bucket)
                    if vers:
                        s3.put_bucket_versioning(
                            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
                    prof = cProfile.Profile(time.thread_time) if args.profile else None
                    if counts is not None:
                        counts.clear()
                    cpu = one_run(endpoint, bucket, os.path.join(tmp, bucket), mode, files, prof)
                    line = {"round": r, "mode": mode, "versioned": vers, "files": len(files),
                            "cpu_ms_per_file": round(cpu / len(files) * 1000, 3),
                            "load": os.getloadavg()[0]}
                    line.update(COUNTS)
                    line["csw_per_file"] = [round(x / len(files), 1) for x in SWITCHES]
                    line["threads_cpu_s"] = {k: round(v, 2) for k, v in THREADS.items()}
                    if counts:
                        line["per_file"] = {k: round(v / len(files), 2)
                                            for k, v in sorted(counts.items())}
                    print(line, flush=True)
                    if prof is not None:
                        st = pstats.Stats(prof)
                        for p in PROFILES:
                            st.add(p)
                        PROFILES.clear()
                        st.sort_stats("tottime").print_stats(args.profile)
                        if args.dump:
                            st.dump_stats(f"{args.dump}.{mode}{'.v' if vers else ''}.{r}")
        finally:
            gen.close()


if __name__ == "__main__":
    main()
