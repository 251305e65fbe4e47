#!/usr/bin/env python3
"""Simulated cache misses a cached request costs, with N tokens in turn (callgrind's cache
simulator): what instruction counts do not see of a token cache's memory chain.

Starts an nginx upstream and tokengate (one worker) under `valgrind --tool=callgrind
--cache-sim=yes` with a 32 KiB first-level and a 1 MiB last-level data cache, sends wrk
through N RS256 tokens for WARM runs of 10 s (so that every token is cached: a token is cached
on its second verification), zeroes the counters (`callgrind_control -z`), sends wrk for
MEASURE seconds more, dumps (`callgrind_control -d`) and prints the dump's totals (Ir, D1mr,
DLmr, ...) with wrk's request count: divide one by the other. Every process it starts is
stopped by PID; everything listens on 127.0.0.1. The output directory must be one nginx's
worker (user nobody) can read, such as one under /tmp.

    python3 benches/load/cachesim.py target/release/tokengate 2000 /tmp/tokengate-cachesim 4 10
"""
import signal, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare

def main():
    binary, n, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    warm, measure = int(sys.argv[4]), int(sys.argv[5])
    out.mkdir(parents=True, exist_ok=True)
    compare.Keys(out)
    tokens = compare.tokens_file(out, "RS256", n)
    upstream, port, admin = (compare.free_port() for _ in range(3))
    config = compare.write_tokengate_config(out, port, admin, upstream)
    procs = compare.Processes()
    try:
        compare.start_upstream(out, procs, upstream)
        compare.wait_port(upstream)
        prof = out / "callgrind.cs"
        g = procs.start(["valgrind", "--tool=callgrind", "--cache-sim=yes", "--D1=32768,8,64",
                         "--LL=1048576,16,64", f"--callgrind-out-file={prof}", binary, "serve", "--config", str(config)],
                        cpu=0, env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, log=out / "proxy.log")
        compare.wait_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}/verified"
        sent = 0
        for _ in range(warm):
            r = compare.run_wrk(url, tokens, 10, 8, sent % n)
            sent += r["requests"]
        print("warm-up requests", sent, flush=True)
        subprocess.run(["callgrind_control", "-z", str(g.pid)], check=True, capture_output=True)
        r = compare.run_wrk(url, tokens, measure, 8, sent % n)
        subprocess.run(["callgrind_control", "-d", "measured", str(g.pid)], check=True, capture_output=True)
        print("measured", r)
        g.send_signal(signal.SIGINT); g.wait(timeout=120)
    finally:
        procs.stop()
    dumps = sorted(out.glob("callgrind.cs*"))
    print(dumps)
    for d in dumps:
        text = subprocess.run(["callgrind_annotate", str(d)], capture_output=True, text=True).stdout
        for line in text.splitlines():
            if "PROGRAM TOTALS" in line or line.startswith("Events shown"):
                print(d.name, line)

if __name__ == "__main__":
    main()
