#!/usr/bin/env python3
"""Two tokengate builds side by side on one workload, in alternating rounds.

On this kind of machine timings drift by tens of per cent within minutes, so a change is
judged by running the build before it and the build after it at the same time: both start
(one worker each, on CPU 0; wrk and an nginx upstream on CPU 1), and rounds alternate
A B A B ... so that drift hits both alike. Each round reports the gateway's own CPU time per
request (from /proc) and throughput; the summary gives medians and every round's figure, so
that a change which wins only in the median is visible as such.

    cargo build --release && cp target/release/tokengate /tmp/after
    git stash && cargo build --release && cp target/release/tokengate /tmp/before && git stash pop
    python3 benches/load/ab.py /tmp/before /tmp/after                       # RS256, every token new
    python3 benches/load/ab.py /tmp/before /tmp/after --alg ES256 --tokens new,1

`--tokens` picks the workloads: `new` (every token new: a pool no round repeats from, each
build sending its own pass over it), `1` or `10000` (tokens rotating through that many).
Needs wrk, nginx and openssl, like compare.py, whose keys, tokens and processes it uses.
Every process it starts is stopped by PID; everything listens on 127.0.0.1 only.
"""

import argparse
import statistics
import time
from pathlib import Path

import compare

ROOT = compare.ROOT


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the tokengate binary of the build before the change (A)")
    parser.add_argument("after", help="the tokengate binary of the build after it (B)")
    parser.add_argument("--alg", default="RS256", choices=["RS256", "ES256"])
    parser.add_argument("--tokens", default="new", help="comma-separated: new, 1, 10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--new-pool", type=int,
                        help="tokens for `new` (default: enough for 25 000 requests a second per build)")
    parser.add_argument("--out", default=str(ROOT / "target/bench-ab"))
    args = parser.parse_args()
    workloads = args.tokens.split(",")
    if args.new_pool is None:
        args.new_pool = max(200_000, args.rounds * args.duration * 25_000)

    compare.need_tools(("wrk", "nginx", "openssl", "taskset"))
    compare.need_python_packages(("cryptography",))
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    compare.Keys(work)
    files = {}
    for n in workloads:
        count = args.new_pool if n == "new" else int(n)
        files[n] = compare.tokens_file(work, args.alg, count)

    procs = compare.Processes()
    upstream = compare.free_port()
    try:
        compare.start_upstream(work, procs, upstream)
        builds = {}
        for name, binary in [("A", args.before), ("B", args.after)]:
            port, admin = compare.free_port(), compare.free_port()
            own = work / name
            own.mkdir(exist_ok=True)
            config = compare.write_tokengate_config(own, port, admin, upstream)
            # One key set for both: the tokens were signed for it.
            config.write_text(config.read_text().replace(f"{own}/jwks.json", f"{work}/jwks.json"))
            gateway = procs.start([binary, "serve", "--config", str(config)], cpu=0,
                                  env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, log=own / "tokengate.log")
            compare.wait_port(port)
            builds[name] = (gateway.pid, f"http://127.0.0.1:{port}/verified")
        compare.wait_port(upstream)
        time.sleep(0.3)
        # Warm-up: connection pools, and the cache for the rotating workloads.
        for _pid, url in builds.values():
            for n in workloads:
                if n != "new":
                    compare.run_wrk(url, files[n], 2, args.connections)
        offsets = {name: 0 for name in builds}
        results = {}
        for round_no in range(1, args.rounds + 1):
            for n in workloads:
                for name, (pid, url) in builds.items():
                    new = n == "new"
                    result = compare.run_wrk_measured(pid, url, files[n], args.duration, args.connections,
                                                      offsets[name] if new else 0)
                    if new:
                        offsets[name] += result["requests"] + args.connections
                    cpu_us = result["cpu_us_per_request"]
                    results.setdefault((n, name), []).append((result["rps"], cpu_us, result["p99_us"]))
                    print(f"  round {round_no} N={n:5s} {name}: {result['rps']:8.0f} req/s  "
                          f"{cpu_us:6.1f} µs CPU a request  p99 {result['p99_us']} µs", flush=True)
        for name in builds:
            if offsets[name] > args.new_pool:
                print(f"warning: build {name} sent {offsets[name]} new tokens from a pool of "
                      f"{args.new_pool}, so some repeated: raise --new-pool")
    finally:
        procs.stop()

    print(f"\n{args.alg}, {args.rounds} rounds of {args.duration} s, A = {args.before}, B = {args.after}\n")
    print("| tokens | build | req/s (median) | CPU µs/request (median) | p99 µs (median) | CPU µs/request, each round |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for (n, name), runs in results.items():
        print(f"| {n} | {name} | {statistics.median(r[0] for r in runs):.0f} | "
              f"{statistics.median(r[1] for r in runs):.1f} | {statistics.median(r[2] for r in runs):.0f} | "
              + " ".join(f"{r[1]:.0f}" for r in runs) + " |")


if __name__ == "__main__":
    main()
