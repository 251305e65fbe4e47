#!/usr/bin/env python3
"""How much of tokengate's cost a request is its own, and how much the HTTP stack's.

Runs, side by side in alternating rounds, the same requests (RS256 tokens rotating through
10 000, as compare.py's "nginx plain proxy, the same requests") through
  - nginx as a plain proxy,
  - hyper_floor (`benches/hyper_floor.rs`): hyper's HTTP/1.1 server and client, upstream
    connections kept, and nothing else: tokengate's stack with none of tokengate in it,
  - tokengate on its anonymous route (routing, headers, metrics, no token check),
  - tokengate verifying the tokens (cached after the warm-up),
each with one worker on CPU 0, wrk and the nginx upstream on CPU 1, and reports each one's
CPU time a request (user and kernel, from /proc) and throughput, medians and every round.

    python3 benches/load/floor.py                       # 5 rounds of 5 s
    python3 benches/load/floor.py --rounds 7 --duration 4

Needs wrk, nginx and openssl, like compare.py, whose keys, tokens and processes it uses.
Every process it starts is stopped by PID; everything listens on 127.0.0.1 only.
"""

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import compare

ROOT = compare.ROOT


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(ROOT / "target/release/tokengate"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "target/bench-floor"))
    args = parser.parse_args()

    compare.need_tools(("wrk", "nginx", "openssl", "taskset"))
    compare.need_python_packages(("cryptography",))
    if args.binary == parser.get_default("binary"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    compare.Keys(work)
    tokens = compare.tokens_file(work, "RS256", 10_000)
    ports = {name: compare.free_port() for name in ("upstream", "nginx", "floor", "tokengate", "admin")}
    floor_command = compare.floor_proxy(ports["floor"], ports["upstream"])

    procs = compare.Processes()
    results = {}
    try:
        compare.start_upstream(work, procs, ports["upstream"])
        nginx = procs.start(compare.nginx_proxy(work, ports["nginx"], ports["upstream"]), cpu=0)
        floor = procs.start(floor_command, cpu=0, env={"TOKIO_WORKER_THREADS": "1"},
                            log=work / "floor.log")
        config = compare.write_tokengate_config(work, ports["tokengate"], ports["admin"], ports["upstream"])
        gateway = procs.start([args.binary, "serve", "--config", str(config)], cpu=0,
                              env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, log=work / "tokengate.log")
        for port in ports.values():
            compare.wait_port(port)
        time.sleep(0.3)
        targets = [
            ("nginx plain proxy", compare.child_pid(nginx.pid), f"http://127.0.0.1:{ports['nginx']}/"),
            ("hyper_floor", floor.pid, f"http://127.0.0.1:{ports['floor']}/"),
            ("tokengate anonymous route", gateway.pid, f"http://127.0.0.1:{ports['tokengate']}/plain"),
            ("tokengate RS256, 10 000 tokens", gateway.pid, f"http://127.0.0.1:{ports['tokengate']}/verified"),
        ]
        # Warm-up: connection pools, and tokengate's cache (a token is kept on its second check).
        for _name, _pid, url in targets:
            compare.run_wrk(url, tokens, 4, args.connections)
        for round_no in range(1, args.rounds + 1):
            for name, pid, url in targets:
                result = compare.run_wrk_measured(pid, url, tokens, args.duration, args.connections)
                if result["non_2xx"] or result["socket_errors"]:
                    raise SystemExit(f"{name}: not every request succeeded ({result})")
                cpu, kernel = result["cpu_us_per_request"], result["kernel_us_per_request"]
                results.setdefault(name, []).append((result["rps"], cpu, cpu - kernel, kernel))
                print(f"  round {round_no} {name:32s} {result['rps']:8.0f} req/s  "
                      f"{cpu:5.1f} µs CPU a request ({cpu - kernel:4.1f} user)", flush=True)
    finally:
        procs.stop()

    print(f"\nRS256 tokens rotating through 10 000, {args.rounds} rounds of {args.duration} s\n")
    print("| target | req/s | CPU µs/request | user | kernel | CPU µs/request, each round |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    medians = {}
    for name, runs in results.items():
        medians[name] = [statistics.median(r[i] for r in runs) for i in range(4)]
        rps, cpu, user, kernel = medians[name]
        print(f"| {name} | {rps:.0f} | {cpu:.1f} | {user:.1f} | {kernel:.1f} | "
              + " ".join(f"{r[1]:.1f}" for r in runs) + " |")
    nginx = medians["nginx plain proxy"][1]
    print("\nnginx's CPU time a request over each one's (the price-of-checking aim is 0.9 for tokengate, verifying):")
    for name, (_rps, cpu, _user, _kernel) in medians.items():
        if name != "nginx plain proxy":
            rounds = [n[1] / r[1] for n, r in zip(results["nginx plain proxy"], results[name])]
            print(f"  {name}: {nginx / cpu:.2f} (rounds {min(rounds):.2f}–{max(rounds):.2f})")


if __name__ == "__main__":
    main()
