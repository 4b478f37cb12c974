"""W1's multipart schedule, mode by mode, on a real mount: when each part's request starts and
ends, how long 4 / 3 / 2 / 1 parts were in flight, the last part and the completion against
`dd`'s end, the daemon's exit, and the server's CPU (docs/BENCHMARKS.md, session 14).

    python -m bench.upload_timeline [--size 1024] [--rounds 2] [--modes plain,s3ec]
                                    [--keep-events DIR]

Starts its own SeaweedFS; each round mounts every mode in turn cold (the bench's `S3encfsPeer`),
writes the file with `dd bs=1M` and unmounts durably (`s3encfs umount`). The daemon runs under
this module's `--daemon` wrapper, which times `StoreMultipart.upload_part` (every part request,
both modes), `complete_multipart` and, in s3ec mode, `S3ECStore.upload_part` (a part's arrival)
and writes the events (wall-clock times) to `$UPLOAD_TIMELINE_EVENTS` before the mount exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def daemon(argv: list[str]) -> None:
    """Run `s3encfs argv…` with the part requests timed; events dumped at the mount's exit."""
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def rec(*ev: Any) -> None:
        with lock:
            events.append((time.time(), *ev))

    from s3encfs.store import multipart as mp
    from s3encfs.store import s3ec

    def timed(cls: Any, name: str, start: str, end: str, numbered: bool) -> None:
        real = getattr(cls, name)

        def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            n = (a[2], len(a[3])) if numbered else ()
            rec(start, *n)
            out = real(self, *a, **k)
            rec(end, *n[:1])
            return out

        setattr(cls, name, wrapper)

    timed(mp.StoreMultipart, "upload_part", "part_start", "part_end", True)
    timed(mp.StoreMultipart, "complete_multipart", "complete_start", "complete_end", False)
    timed(s3ec.S3ECStore, "upload_part", "arrive", "arrived", True)
    real_exit = os._exit

    def dump_and_exit(code: int) -> None:
        rec("exit")
        with open(os.environ["UPLOAD_TIMELINE_EVENTS"], "w") as f:
            json.dump(events, f)
        real_exit(code)

    os._exit = dump_and_exit  # type: ignore[assignment]  # the mount ends with os._exit (cli.py): no atexit runs
    from s3encfs.cli import main

    sys.argv = ["s3encfs", *argv]
    sys.exit(main())


def summary(events: list[list[Any]], t0: float, dd_end: float) -> dict[str, Any]:
    starts = {e[2]: e[0] for e in events if e[1] == "part_start"}
    ends = {e[2]: e[0] for e in events if e[1] == "part_end"}
    when = {e[1]: e[0] for e in events if e[1] in ("complete_start", "complete_end", "exit")}
    edges = sorted([(t, 1) for t in starts.values()] + [(t, -1) for t in ends.values()])
    inflight: dict[int, float] = {}
    cur, last = 0, None
    for t, d in edges:
        if last is not None:
            inflight[cur] = inflight.get(cur, 0.0) + t - last
        cur, last = cur + d, t
    last_part = max(starts)
    arrive = {e[2]: e[0] for e in events if e[1] == "arrive"}
    waits = sorted(starts[n] - arrive[n] for n in arrive if n in starts and n != last_part)
    out = {"parts": len(starts), "first_part_s": round(min(starts.values()) - t0, 2),
           "dd_end_s": round(dd_end - t0, 2),
           "last_part_s": [round(starts[last_part] - t0, 3), round(ends[last_part] - t0, 3)],
           "streamed_end_s": round(max(v for n, v in ends.items() if n != last_part) - t0, 3),
           "complete_s": [round(when["complete_start"] - t0, 3),
                          round(when["complete_end"] - t0, 3)],
           "exit_s": round(when["exit"] - t0, 2),
           "inflight_s": {k: round(v, 2) for k, v in sorted(inflight.items())}}
    if waits:
        out["arrive_to_send_ms"] = {"median": round(waits[len(waits) // 2] * 1000, 1),
                                    "p90": round(waits[int(len(waits) * 0.9)] * 1000, 1),
                                    "sum_s": round(sum(waits), 2)}
    return out


def _cpu(pid: int) -> float:
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    if sys.argv[1:2] == ["--daemon"]:
        daemon(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="plain,s3ec")
    ap.add_argument("--keep-events", help="directory for each run's raw events (JSON)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from bench.peers import Ctx, S3encfsPeer
    from s3encfs.server import SeaweedS3

    class Timed(S3encfsPeer):
        events = os.devnull

        def mount_cmd(self, bucket: str) -> list[str]:
            cmd = super().mount_cmd(bucket)
            return [sys.executable, "-m", "bench.upload_timeline", "--daemon", *cmd[1:]]

        def proc_env(self) -> dict[str, str]:
            return {**super().proc_env(), "UPLOAD_TIMELINE_EVENTS": self.events}

    work = Path(tempfile.mkdtemp(prefix="s3encfs-timeline-", dir="/var/tmp"))
    src = work / "src.bin"
    with open(src, "wb") as f:
        for _ in range(args.size):
            f.write(os.urandom(1 << 20))
    server = SeaweedS3(str(work / "seaweed"))
    server.start()
    assert server._proc is not None
    spid = server._proc.pid
    try:
        ctx = Ctx(endpoint=server.endpoint, access_key=server.access_key,
                  secret_key=server.secret_key, env=dict(server.env()), workdir=work,
                  s3=server.client())
        peers = {m: Timed(ctx, "none" if m == "plain" else m) for m in args.modes.split(",")}
        for p in peers.values():
            p.setup()
        for r in range(args.rounds):
            for mode, p in peers.items():
                p.events = str(work / f"events-{mode}-{r}.json")
                bucket = f"{p.bucket}-{r}"
                ctx.s3.create_bucket(Bucket=bucket)
                mnt = p.mount(bucket)
                srv, t0 = _cpu(spid), time.time()
                subprocess.run(["dd", f"if={src}", f"of={mnt}/big.bin", "bs=1M"], check=True,
                               capture_output=True)
                dd_end = time.time()
                p.unmount_durable(600)
                line = {"round": r, "mode": mode, "wall_s": round(time.time() - t0, 2),
                        "daemon_cpu_s": p.last_cpu_s,
                        "server_cpu_s": round(_cpu(spid) - srv, 2),
                        "load": round(os.getloadavg()[0], 1)}
                events = json.loads(Path(p.events).read_text())
                line.update(summary(events, t0, dd_end))
                print(json.dumps(line), flush=True)
                if args.keep_events:
                    shutil.copy(p.events, args.keep_events)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
