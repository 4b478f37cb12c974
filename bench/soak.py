"""Soak: mixed reads, writes, renames, unlinks and remounts through a fault-injecting proxy,
checked against a local model directory; at the end a cold remount must equal the model.

    python -m bench.soak --minutes 30 [--mode none|client] [--error-rate 0.02]

Exit 0 only with zero data differences.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultproxy import Fault, FaultProxy
from mounting import S3ENCFS, Mount

from s3encfs.server import SeaweedS3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Soak:
    def __init__(self, root: Path, mnt: Path, rng: random.Random):
        self.model = root
        self.mnt = mnt
        self.rng = rng
        self.ops = 0

    def files(self) -> list[Path]:
        return [p.relative_to(self.model) for p in self.model.rglob("*") if p.is_file()]

    def dirs(self) -> list[Path]:
        return [Path(".")] + [p.relative_to(self.model) for p in self.model.rglob("*")
                              if p.is_dir()]

    def both(self, fn) -> None:  # type: ignore[no-untyped-def]
        fn(self.model)
        fn(self.mnt)
        self.ops += 1

    def step(self) -> None:
        r = self.rng.random()
        files, dirs = self.files(), self.dirs()
        if r < 0.30 or not files:
            rel = self.rng.choice(dirs) / f"f{self.rng.randrange(10**6)}"
            data = self.rng.randbytes(self.rng.choice([0, 100, 70_000, 300_000, 3_000_000]))
            self.both(lambda root: (root / rel).write_bytes(data))
        elif r < 0.45:
            rel = self.rng.choice(files)
            off = self.rng.randrange((self.model / rel).stat().st_size + 1)
            data = self.rng.randbytes(self.rng.randrange(1, 200_000))

            def pwrite(root: Path) -> None:
                fd = os.open(root / rel, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, off)
                finally:
                    os.close(fd)
            self.both(pwrite)
        elif r < 0.60:
            rel = self.rng.choice(files)
            if (self.mnt / rel).read_bytes() != (self.model / rel).read_bytes():
                raise AssertionError(f"content differs: {rel}")
            self.ops += 1
        elif r < 0.70:
            rel = self.rng.choice(files)
            dst = self.rng.choice(dirs) / f"r{self.rng.randrange(10**6)}"
            self.both(lambda root: os.rename(root / rel, root / dst))
        elif r < 0.78:
            rel = self.rng.choice(files)
            self.both(lambda root: os.unlink(root / rel))
        elif r < 0.86 and len(dirs) < 30:
            rel = self.rng.choice(dirs) / f"d{self.rng.randrange(10**6)}"
            self.both(lambda root: os.mkdir(root / rel))
        else:
            rel = self.rng.choice(files)
            size = self.rng.randrange((self.model / rel).stat().st_size + 1)
            self.both(lambda root: os.truncate(root / rel, size))


def compare(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        diffs.extend(f"only in model: {prefix}{n}" for n in cmp.left_only)
        diffs.extend(f"only in mount: {prefix}{n}" for n in cmp.right_only)
        for name in cmp.common_files:
            if (Path(cmp.left) / name).read_bytes() != (Path(cmp.right) / name).read_bytes():
                diffs.append(f"content: {prefix}{name}")
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b), "")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--mode", default="none")
    ap.add_argument("--error-rate", type=float, default=0.02)
    ap.add_argument("--remount-every", type=int, default=300, help="operations")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="s3encfs-soak-", dir="/var/tmp"))
    server = SeaweedS3(work / "seaweed")
    server.start()
    proxy = FaultProxy(server.endpoint, seed=args.seed)
    proxy.start()
    mount = None
    try:
        server.client().create_bucket(Bucket="soak")
        env = dict(os.environ, **server.env(), S3ENCFS_KEYRING_DIR=str(work / "keys"),
                   S3ENCFS_PASSPHRASE="", S3ENCFS_ALLOW_EMPTY_PASSPHRASE="1")
        if args.mode != "none":
            subprocess.run([*S3ENCFS, "key", "create", "default"], env=env, check=True,
                           capture_output=True)
        for kind, rate in (("status", args.error_rate), ("reset", args.error_rate / 2)):
            proxy.add_fault(Fault(kind=kind, rate=rate))
        model = work / "model"
        model.mkdir()
        mount = Mount("s3://soak", work / "mnt", work / "cache", env, encryption=args.mode,
                      extra=["--endpoint-url", proxy.endpoint], log_path=work / "mount.log")
        mount.start()
        soak = Soak(model, mount.mountpoint, rng)
        deadline = time.monotonic() + args.minutes * 60
        remounts = 0
        while time.monotonic() < deadline:
            soak.step()
            if soak.ops and soak.ops % args.remount_every == 0:
                mount.umount()
                if rng.random() < 0.5:
                    shutil.rmtree(mount.cache_dir)
                mount.start()
                remounts += 1
                log(f"{soak.ops} operations, {remounts} remounts, "
                    f"{sum(proxy.stats()['faults'].values())} faults injected")
        mount.umount()
        proxy.clear_faults()
        shutil.rmtree(mount.cache_dir)
        mount.start()
        diffs = compare(model, mount.mountpoint)
        mount.umount()
        faults = sum(proxy.stats()["faults"].values())
        log(f"soak seed={args.seed}: {soak.ops} operations, {remounts} remounts, "
            f"{faults} faults injected, {len(diffs)} differences")
        for d in diffs[:20]:
            log("  " + d)
        return 0 if not diffs else 1
    finally:
        if mount is not None:
            mount.stop()
        proxy.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
