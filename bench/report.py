"""Turn results into the side-by-side table, the ratio columns and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# workload -> (metric, higher is better, label)
METRIC: dict[str, tuple[str, bool, str]] = {
    "W1": ("mbps", True, "write 1 file until durable"),
    "W2": ("mbps", True, "cold sequential read"),
    "W2b": ("mbps", True, "warm sequential read"),
    "W3": ("iops", True, "cold 4 KiB random read"),
    "W4": ("seconds", False, "rsync tree until durable"),
    "W5": ("seconds", False, "rsync again, fresh mount"),
    "W6": ("seconds", False, "stat tree, fresh mount"),
    "W4v": ("seconds", False, "W4 into a versioned bucket"),
    "W6a": ("seconds", False, "stat tree, --as-of mount"),
    "M1": ("mbps", True, "mem: big write until durable"),
    "M2": ("seconds", False, "mem: ls -f of a big dir"),
}
CEILING = {"W1": "W7up", "W2": "W7down", "W2b": "W7down"}
RAW_CLIENTS = ("boto3", "awscrt")  # W7 ceiling entries (through the set's network path)
KIND_ABBR = {"GET": "G", "PUT": "P", "HEAD": "H", "LIST": "L", "MULTIPART": "M", "COPY": "C",
             "DELETE": "D", "OTHER": "O"}  # fmt: skip
OURS = ("s3encfs-plain", "s3encfs-client", "s3encfs-s3ec")

Results = dict[str, dict[str, dict[str, Any]]]  # workload -> peer -> Result.to_json()


def cell(r: dict[str, Any] | None, workload: str) -> str:
    if r is None:
        return "-"
    if r.get("status", "ok") != "ok":
        return str(r["status"]).split(":")[0]
    metric = METRIC.get(workload, ("mbps", True, ""))[0]
    secs = r.get("seconds")
    parts = [f"{secs:.1f}s"] if secs is not None else []
    if metric == "mbps" and r.get("mbps") is not None:
        parts.append(f"{r['mbps']:.0f}MB/s")
    if metric == "iops" and r.get("iops") is not None:
        parts = [f"{r['iops']:.0f}IOPS"]
    if workload in ("W5", "M2") and r.get("items") is not None:
        parts.append(f"{r['items']}it")
    return " ".join(parts) + ("*" if r.get("warn") else "")


def score(r: dict[str, Any] | None, workload: str) -> float | None:
    """A higher-is-better number for ratios (1/seconds for time metrics)."""
    if not r or r.get("status", "ok") != "ok":
        return None
    metric, higher, _ = METRIC[workload]
    v = r.get(metric)
    if not v:
        return None
    return float(v) if higher else 1.0 / float(v)


def ratios(results: Results, peers: list[str]) -> dict[str, dict[str, float | None]]:
    """workload -> {'<ours>/best': x, '<ours>/ceiling': y}; >1 means s3encfs is faster."""
    out: dict[str, dict[str, float | None]] = {}
    others = [p for p in peers if p not in OURS]
    for w in results:
        if w not in METRIC:
            continue
        row: dict[str, float | None] = {}
        best = max(
            (s for p in others if (s := score(results[w].get(p), w)) is not None), default=None
        )
        # the ceiling is the best raw client measured (boto3's s3transfer, awscrt)
        ceil = max((r["mbps"] for c in RAW_CLIENTS
                    if (r := results.get(CEILING.get(w, ""), {}).get(c))
                    and r.get("status", "ok") == "ok" and r.get("mbps")), default=None)
        for ours in OURS:
            s = score(results[w].get(ours), w)
            if ours not in peers:
                continue
            row[f"{ours}/best"] = s / best if s and best else None
            row[f"{ours}/ceil"] = s / ceil if s and ceil else None
        out[w] = row
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def render(results: Results, peers: list[str]) -> str:
    """The main table (with ratio columns), the ceiling, and the peak-RSS table."""
    rat = ratios(results, peers)
    ratio_cols = [f"{o}/{k}" for o in OURS if o in peers for k in ("best", "ceil")]
    header = ["workload", *peers, *[c.replace("s3encfs-", "") for c in ratio_cols]]
    rows = []
    order = [w for w in METRIC if w in results]
    for w in order:
        row = [f"{w} {METRIC[w][2]}"] + [cell(results[w].get(p), w) for p in peers]
        for c in ratio_cols:
            v = rat.get(w, {}).get(c)
            row.append(f"{v:.2f}" if v is not None else "-")
        rows.append(row)
    out = [_table(header, rows)]
    for client, how in (("boto3", "boto3 s3transfer, 16 MiB parts, 10 threads"),
                        ("awscrt", "awscrt S3Client, 16 MiB parts")):
        for suffix in ("", "-direct"):
            ceil = [f"{w}: {cell(results[w].get(client + suffix), 'W1')}"
                    for w in ("W7up", "W7down") if client + suffix in results.get(w, {})]
            if ceil:
                where = ", direct to the server" if suffix else ""
                out.append(f"W7 ceiling ({how}{where}): " + ", ".join(ceil))
    rss_rows = []
    for w in order:
        vals = [results[w].get(p, {}).get("peak_rss_mib") for p in peers]
        if any(v is not None for v in vals):
            rss_rows.append([w] + [f"{v:.0f}" if v is not None else "-" for v in vals])
    if rss_rows:
        out.append("Peak RSS of the FUSE daemon during each workload's mount session (MiB):")
        out.append(_table(["workload", *peers], rss_rows))
    cpu_rows = []
    for w in order:
        cpus = [results[w].get(p, {}).get("cpu_s") for p in peers]
        if any(v is not None for v in cpus):
            cpu_rows.append([w] + [f"{v:.1f}" if v is not None else "-" for v in cpus])
    if cpu_rows:
        out.append("CPU seconds of the FUSE daemon over the workload's mount sessions:")
        out.append(_table(["workload", *peers], cpu_rows))
    out += _per_peer(results, peers, order,
                     "CPU seconds of the S3 server (SeaweedFS) over the workload:",
                     lambda r: f"{r['server_cpu_s']:.1f}" if "server_cpu_s" in r else None)
    out += count_tables(results, peers, order)
    warns = [
        f"  {w} {p}: {r['warn']}" for w in order for p, r in results[w].items() if r.get("warn")
    ]
    if warns:
        out.append("* finished with errors:\n" + "\n".join(warns))
    out.append("ratios: s3encfs speed / best peer's (or the W7 ceiling); >1 = s3encfs faster")
    return "\n\n".join(out)


def _per_peer(results: Results, peers: list[str], order: list[str], title: str,
              fmt: Any) -> list[str]:
    """A workload x peer table of `fmt(result)` (None: "-"); [] when no cell has a value."""
    rows, used = [], False
    for w in order:
        vals = [fmt(results[w].get(p, {})) for p in peers]
        used = used or any(v is not None for v in vals)
        rows.append([w] + [v if v is not None else "-" for v in vals])
    return [title, _table(["workload", *peers], rows)] if used else []


def _kinds(r: dict[str, Any]) -> str | None:
    if r.get("s3_requests") is None:
        return None
    kinds = " ".join(f"{KIND_ABBR.get(k, k)}{n}" for k, n in r.get("s3", {}).items() if n)
    return f"{r['s3_requests']} {kinds}".strip()


def count_tables(results: Results, peers: list[str], order: list[str]) -> list[str]:
    """S3 requests by kind, daemon CPU per S3 request, s3encfs's FUSE requests."""
    legend = ", ".join(f"{a}={k}" for k, a in KIND_ABBR.items())
    out = _per_peer(results, peers, order,
                    f"S3 requests per workload, counted by the proxy (total, then {legend}):",
                    _kinds)
    out += _per_peer(results, peers, order,
                     "FUSE daemon CPU per S3 request (ms; CPU over the workload / requests):",
                     lambda r: f"{r['cpu_ms_per_req']:.2f}" if "cpu_ms_per_req" in r else None)
    ours = [p for p in peers if p.startswith("s3encfs")]
    out += _per_peer(results, ours, order, "FUSE requests per workload (s3encfs `status`):",
                     lambda r: str(r["fuse_requests"]) if "fuse_requests" in r else None)
    return out


def proxy_cost(doc: dict[str, Any]) -> str:
    """At 0 ms: each raw client's W7 rate through the proxy against direct; the proxy's CPU."""
    res = doc["results"]
    parts = []
    for client in RAW_CLIENTS:
        for w in ("W7up", "W7down"):
            via, direct = res.get(w, {}).get(client), res.get(w, {}).get(f"{client}-direct")
            if via and direct and via.get("mbps") and direct.get("mbps"):
                parts.append(f"{client} {w[2:]} {via['mbps']:.0f} vs {direct['mbps']:.0f} MB/s "
                             f"({via['mbps'] / direct['mbps']:.0%})")
    lines = ["Proxy cost (W7 through the proxy vs direct): " + "; ".join(parts)] if parts else []
    if (cpu := doc.get("proxy_cpu_s")) is not None:
        tot = doc.get("proxy_totals") or {}
        gb = (tot.get("bytes_up", 0) + tot.get("bytes_down", 0)) / 1e9
        per = f" ({cpu / gb:.2f} s per GB through it, {gb:.1f} GB)" if gb > 0.01 else ""
        lines.append(f"The latency proxy's own CPU over this whole set: {cpu:.1f} s{per}")
    return "\n".join(lines)


def set_title(key: str, doc: dict[str, Any]) -> str:
    rtt = doc.get("rtt_ms")
    if not doc.get("proxy", True):
        return "Loopback, direct to the server (no proxy, no S3 request counts)"
    if not rtt:
        return "Loopback, through the counting proxy at 0 ms"
    return f"{rtt:g} ms RTT through bench.latency (set {key})"


def render_sets(docs: dict[str, dict[str, Any]]) -> str:
    out = []
    for key, doc in docs.items():
        if not doc["results"]:
            continue
        bar = "=" * 20
        out.append(f"{bar} {set_title(key, doc)} {bar}")
        out.append(render(doc["results"], doc["peers"]))
        if cost := proxy_cost(doc):
            out.append(cost)
    return "\n\n".join(out)


def write_json(path: Path, meta: dict[str, Any], docs: dict[str, dict[str, Any]]) -> None:
    """`sets`: one entry per network set; the first set also at the top (older readers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sets = {k: {**d, "ratios": ratios(d["results"], d["peers"])} for k, d in docs.items()}
    empty: dict[str, Any] = {"peers": [], "results": {}, "ratios": {}}
    first = next(iter(sets.values()), empty)
    doc = {"meta": meta, "sets": sets, "peers": first["peers"], "results": first["results"],
           "ratios": first["ratios"]}  # fmt: skip
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report [FILE]`: print the table of a saved run again."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    doc = json.loads(Path(args[0] if args else "bench/results/latest.json").read_text())
    print(render_sets(doc["sets"]) if "sets" in doc else render(doc["results"], doc["peers"]))
    m = doc["meta"]
    print(f"\n{m['date']}  size={m['size']}  tree={m['tree']}  total {m['elapsed_s']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
