#!/usr/bin/env python3
"""Memory under a soak of distinct tokens and paths: RSS must follow the token cache bound,
not the number of requests.

Starts an nginx upstream and tokengate (one worker) on 127.0.0.1, then runs wrk in phases.
Requests rotate through a pool of --tokens distinct tokens (by default over five times what
the cache holds; each phase starts at its own share of the pool) and each has a path of its
own, and is sent twice in a row, so that it is cached (on its second verification) and the
cache fills. After each phase it records tokengate's RSS and the number of metric series on /metrics. The
verified-token cache is bounded at about 64 MiB, so RSS climbs while the cache fills and
then stays flat; after the first phase the series count must not move at all.

    python3 benches/load/soak.py                       # 6 phases of 20 s
    python3 benches/load/soak.py --phases 10 --duration 30

Writes target/bench-load/soak.json and prints a table. Needs what compare.py needs.
"""

import argparse
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (shares the key, token and process helpers)


def series(admin_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return sum(1 for line in r.read().decode().splitlines() if line and not line.startswith("#"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", type=int, default=6)
    parser.add_argument("--duration", type=int, default=20, help="seconds per phase")
    parser.add_argument("--tokens", type=int, default=400_000, help="distinct ES256 tokens")
    parser.add_argument("--out", default=str(compare.ROOT / "target/bench-load"))
    args = parser.parse_args()

    compare.need_tools()
    compare.need_python_packages()
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=compare.ROOT, check=True)
    compare.Keys(work)
    tokens = compare.tokens_file(work, "ES256", args.tokens)

    ports = {name: compare.free_port() for name in ["upstream", "nginx", "haproxy", "haproxy_rs256",
                                                    "haproxy_es256", "tokengate", "tokengate_admin"]}
    procs = compare.Processes()
    rows = []
    try:
        gateway, _ready, _pids = compare.start_targets(work, procs, ports)
        rows.append({"phase": 0, "requests": 0, "rss_kib": compare.rss_kib(gateway.pid),
                     "series": series(ports["tokengate_admin"])})
        sent = 0
        share = args.tokens // args.phases
        for phase in range(1, args.phases + 1):
            wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{args.duration}s",
                   "-s", str(Path(compare.__file__).with_name("rotate.lua")),
                   f"http://127.0.0.1:{ports['tokengate']}/verified", "--", str(tokens),
                   str((phase - 1) * share), "paths", "2"]
            text = subprocess.run(wrk, capture_output=True, text=True, timeout=args.duration + 120).stdout
            result = json.loads(next(l for l in text.splitlines() if l.startswith("RESULT "))[7:])
            sent += result["requests"]
            rows.append({"phase": phase, "requests": sent, "rps": result["rps"],
                         "errors": result["non_2xx"] + result["socket_errors"],
                         "rss_kib": compare.rss_kib(gateway.pid), "series": series(ports["tokengate_admin"])})
            r = rows[-1]
            print(f"phase {phase}: {sent} requests in all, {r['rps']:.0f} req/s, RSS {r['rss_kib'] / 1024:.1f} MiB, "
                  f"{r['series']} metric series, {r['errors']} errors", flush=True)
    finally:
        procs.stop()

    (out / "soak.json").write_text(json.dumps(rows, indent=2))
    print("\n| after phase | requests | RSS MiB | metric series |\n| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['phase']} | {r['requests']} | {r['rss_kib'] / 1024:.1f} | {r['series']} |")
    half = rows[len(rows) // 2]
    last = rows[-1]
    print(f"\nRSS from phase {half['phase']} to {last['phase']}: {half['rss_kib'] / 1024:.1f} -> "
          f"{last['rss_kib'] / 1024:.1f} MiB while requests went {half['requests']} -> {last['requests']}; "
          f"metric series after phase 1 {rows[1]['series']} -> {last['series']}.")


if __name__ == "__main__":
    # On SIGTERM, unwind as on Ctrl-C, so that every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
