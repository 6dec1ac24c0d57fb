"""Backfill benchmark: 10,000 leads from the fake Leaditio API at 600 requests a minute.

Prints, for a first run and a re-run side by side: requests per second achieved / allowed, 429s
caused, API requests per lead, and the client's peak memory (and its memory early vs late, to show
it stays flat).

Time is scaled so the run takes under two minutes instead of ~17: the fake's window is 60/scale
seconds with the same 600 requests (and the client's clock-skew margin is scaled the same way).
The ratio printed is achieved / allowed *under that scaling*, which is what pacing is judged on.

    .venv/bin/python bench/backfill.py [--leads 10000] [--per-minute 600] [--scale 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.backfill import Backfill, Job, Progress, Result  # noqa: E402
from connector.config import load_config  # noqa: E402
from connector.runtime import Runtime  # noqa: E402
from connector.store import Store  # noqa: E402

KEY = "bench-key"


def rss_mb() -> float:
    """Resident memory now (Linux /proc), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def start_fake(leads: int, limit: int, window: float) -> tuple[subprocess.Popen[str], str]:
    """The fake API in its own process, so it does not share this interpreter (or its memory)."""
    process = subprocess.Popen([sys.executable, "-m", "fakes.leaditio_api", "--leads", str(leads),
                                "--limit", str(limit), "--window", str(window), "--key", KEY],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def fake_stats(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("stats\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--per-minute", type=int, default=600, help="the API key's limit per (real) minute")
    parser.add_argument("--scale", type=float, default=10.0, help="time compression of the fake's window")
    args = parser.parse_args()
    window = 60.0 / args.scale
    allowed = args.per_minute / window  # requests per (scaled) second
    process, url = start_fake(args.leads, args.per_minute, window)
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = write_config(Path(folder), url, reset_margin=0.5 / args.scale)
            store = Store(config.database.url)
            store.upgrade()
            early: dict[str, float] = {}

            def watch(step: Progress) -> None:
                if step.done >= args.leads // 10 and "rss" not in early:
                    early["rss"] = rss_mb()

            runs: list[tuple[str, Result, float, dict[str, Any], dict[str, Any]]] = []
            for name in ("first run", "re-run"):
                before = fake_stats(process)
                api = Runtime(config).marketplaces["leaditio"].api()
                started, wall_start = time.monotonic(), time.time()
                result = Backfill(Runtime(config, store), Job("leaditio"), api, on_progress=watch).run()
                elapsed = time.monotonic() - started
                api.close()
                # The fake counts in fixed windows aligned to the clock: the most it could have granted
                # is the limit times the windows this run touched (the first and last are partial).
                windows = int(time.time() // window) - int(wall_start // window) + 1
                runs.append((name, result, elapsed, before, {**fake_stats(process), "grantable": windows * args.per_minute}))
            late = rss_mb()
            store.dispose()
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=10)

    print(f"backfill of {args.leads:,} leads; API limit {args.per_minute}/min, time-scaled x{args.scale:g} "
          f"(window {window:g} s, {args.per_minute} requests each = {allowed:g} requests/s allowed)")
    print(f"{'':34}" + "".join(f"{name:>14}" for name, *_ in runs))
    rows: list[tuple[str, list[str]]] = []
    for label, fn in (
        ("seconds", lambda r, e, b, a: f"{e:.1f}"),
        ("API requests", lambda r, e, b, a: f"{r.requests}"),
        ("  list / detail", lambda r, e, b, a: f"{a['requests']['list'] - b['requests']['list']}/"
                                               f"{a['requests']['detail'] - b['requests']['detail']}"),
        ("requests per lead", lambda r, e, b, a: f"{r.requests / args.leads:.4f}"),
        ("requests/s achieved", lambda r, e, b, a: f"{r.requests / e:.1f}"),
        ("achieved / allowed rate", lambda r, e, b, a: f"{r.requests / e / allowed:.3f}"),
        ("requests / most the windows grant", lambda r, e, b, a: f"{r.requests / a['grantable']:.3f}"),
        ("429s caused (server count)", lambda r, e, b, a: f"{a['rate_limited'] - b['rate_limited']}"),
        ("leads enqueued", lambda r, e, b, a: f"{r.counts.enqueued}"),
        ("already present", lambda r, e, b, a: f"{r.counts.already_present}"),
        ("failed", lambda r, e, b, a: f"{r.counts.failed}"),
    ):
        rows.append((label, [fn(result, elapsed, before, after) for _, result, elapsed, before, after in runs]))
    for label, values in rows:
        print(f"{label:34}" + "".join(f"{v:>14}" for v in values))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000  # KB on Linux
    print(f"peak memory of the backfill process: {peak:.0f} MB (RSS after 10% of leads "
          f"{early.get('rss', 0):.0f} MB, at the end {late:.0f} MB)")
    first = runs[0][1]
    ratio = first.requests / runs[0][2] / allowed
    print("aims: rate >= 0.9 of allowed, 0 429s, <= 1.01 requests/lead first, <= 0.02 on a re-run, < 150 MB: "
          + ("met" if ratio >= 0.9 and runs[0][4]["rate_limited"] == 0 and first.requests / args.leads <= 1.01
             and runs[1][1].requests / args.leads <= 0.02 and peak < 150 else "NOT met"))


def write_config(folder: Path, url: str, *, reset_margin: float) -> Any:
    (folder / "map.yaml").write_text(yaml.safe_dump({"fields": {"lead_id": {"from": "id", "required": True}}}))
    document = {
        "database": {"url": f"sqlite:///{folder / 'bench.db'}"},
        "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${BENCH_WEBHOOK_SECRET}"],
                                 "api": {"base_url": url, "api_key": "${BENCH_LEADITIO_KEY}",
                                         "reset_margin": reset_margin}}},
        "destinations": {"out": {"type": "file", "path": str(folder / "out.jsonl"), "mapping": "map.yaml"}},
        "routes": [{"source": "leaditio", "destination": "out"}],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, env={"BENCH_LEADITIO_KEY": KEY, "BENCH_WEBHOOK_SECRET": "bench-webhook-secret-0001"})


if __name__ == "__main__":
    main()
