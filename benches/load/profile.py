#!/usr/bin/env python3
"""Instructions per request on tokengate's hot path, and where they go, from callgrind.

Starts an nginx upstream (`return 200`) on 127.0.0.1 and tokengate (one worker) under
`valgrind --tool=callgrind` twice, sending 1 000 and then 11 000 requests through h2load.
The difference of the two runs, divided by 10 000, is the cost of one request with start-up
and shutdown cancelled out; it is reported in total and per function (self cost), top first.

    python3 benches/load/profile.py                      # a cached RS256 token
    python3 benches/load/profile.py --path /plain        # the anonymous route
    python3 benches/load/profile.py --binary OLD/tokengate --top 20
    python3 benches/load/profile.py --new-tokens             # every RS256 token new
    python3 benches/load/profile.py --new-tokens --alg ES256
    python3 benches/load/profile.py --nginx              # nginx as a plain proxy, the same requests
    python3 benches/load/profile.py --floor              # hyper alone as a plain proxy (benches/hyper_floor.rs)

With `--new-tokens` the load is wrk sending each request a token of its own from a pool of
200 000 (made once, like compare.py's), for 6 s and then 26 s (valgrind slows the gateway
some fifty times, so that is a few thousand requests); the difference is divided by the
requests between the two runs, as wrk counted them.

Instruction counts of one build agree within 1 % from run to run (timings on a shared machine
move by tens of per cent), which is what makes two builds comparable. Needs valgrind, nginx and h2load (Debian:
valgrind nginx-light nghttp2-client). Every process it starts is stopped by PID.
"""

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (keys, tokens, ports and process handling are shared)

RUNS = (1_000, 11_000)
SECONDS = (6, 26)  # --new-tokens: wrk is timed, not counted
SYMBOL = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?) \[")


def self_costs(profile: Path) -> dict:
    """Self instructions per function in a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(profile)],
                          capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in text.splitlines():
        if match := SYMBOL.match(line):
            name = match.group(2)
            costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def profile_once(proxy: list[str], port: int, load, name: str, out: Path,
                 procs: compare.Processes) -> tuple[Path, int]:
    """Runs the proxy command under callgrind through `load` (which returns the requests it
    sent); returns the profile and that count."""
    profile = out / f"callgrind.{name}"
    gateway = procs.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}", *proxy],
                          cpu=0, env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"},
                          log=out / f"proxy.{name}.log")
    compare.wait_port(port, timeout=60)
    requests = load()
    gateway.send_signal(signal.SIGINT)  # valgrind writes the profile as the proxy exits
    gateway.wait(timeout=120)
    return profile, requests


def h2load(url: str, token: str | None, requests: int, log: Path):
    def load():
        command = ["taskset", "-c", "1", "h2load", "--h1", "-n", str(requests), "-c", "8", "-t", "1"]
        if token:
            command += ["-H", f"Authorization: Bearer {token}"]
        result = subprocess.run([*command, url], capture_output=True, text=True, timeout=600)
        status = next((l for l in result.stdout.splitlines() if "status codes" in l), "no answer")
        if f"{requests} 2xx" not in status:
            sys.exit(f"not every request succeeded ({status}); see {log}")
        return requests
    return load


def wrk_new_tokens(url: str, tokens: Path, seconds: int, offset: int, log: Path):
    def load():
        result = compare.run_wrk(url, tokens, seconds, 8, offset)
        if result["non_2xx"] or result["socket_errors"]:
            sys.exit(f"not every request succeeded ({result}); see {log}")
        return result["requests"]
    return load


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(compare.ROOT / "target/release/tokengate"))
    parser.add_argument("--path", default="/verified",
                        help="/verified (a cached token of --alg) or /plain (anonymous)")
    parser.add_argument("--alg", default="RS256", choices=["RS256", "ES256"])
    parser.add_argument("--new-tokens", action="store_true",
                        help="every token new (wrk through a pool), instead of one cached token")
    parser.add_argument("--nginx", action="store_true",
                        help="profile nginx as a plain proxy (the same requests) instead of tokengate")
    parser.add_argument("--floor", action="store_true",
                        help="profile benches/hyper_floor.rs (hyper's server and client passing the "
                             "same requests through, nothing else) instead of tokengate")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", default=str(compare.ROOT / "target/bench-load/profile"))
    args = parser.parse_args()
    compare.need_tools(("valgrind", "callgrind_annotate", "nginx", "h2load", "wrk", "taskset"),
                       "valgrind nginx-light nghttp2-client wrk util-linux")
    if args.nginx and args.floor:
        sys.exit("--nginx or --floor, not both")
    if not (args.nginx or args.floor) and not Path(args.binary).exists():
        sys.exit(f"{args.binary} not found: cargo build --release")
    compare.need_python_packages(("cryptography",))

    # Keys, tokens, configs and profiles all live in `out`, apart from compare.py's files.
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compare.Keys(out)
    verified = args.path.startswith("/verified")
    token = compare.tokens_file(out, args.alg, 1).read_text().split()[0] if verified else None
    pool = compare.tokens_file(out, args.alg, 200_000) if args.new_tokens else None
    upstream, port, admin = (compare.free_port() for _ in range(3))
    if args.nginx:
        if args.new_tokens:
            sys.exit("--nginx checks no token: profile it with the same requests, without --new-tokens")
        # In one process (no master), so that callgrind follows the one doing the work.
        proxy = compare.nginx_proxy(out, port, upstream, one_process=True)
        args.binary = "nginx"
    elif args.floor:
        if args.new_tokens:
            sys.exit("--floor checks no token: profile it with the same requests, without --new-tokens")
        proxy = compare.floor_proxy(port, upstream)
        args.binary = "hyper_floor"
    else:
        config = compare.write_tokengate_config(out, port, admin, upstream)
        proxy = [args.binary, "serve", "--config", str(config)]
    procs = compare.Processes()
    try:
        compare.start_upstream(out, procs, upstream)
        compare.wait_port(upstream)
        url = f"http://127.0.0.1:{port}{args.path}"
        if pool:
            # The second run starts where the first stopped in the pool: no token repeats.
            short, sent = profile_once(proxy, port,
                                       wrk_new_tokens(url, pool, SECONDS[0], 0, out),
                                       f"new.{SECONDS[0]}s", out, procs)
            long, sent_long = profile_once(proxy, port,
                                           wrk_new_tokens(url, pool, SECONDS[1], sent + 100, out),
                                           f"new.{SECONDS[1]}s", out, procs)
        else:
            (short, sent), (long, sent_long) = [
                profile_once(proxy, port, h2load(url, token, n, out), str(n), out, procs)
                for n in RUNS]
    finally:
        procs.stop()

    before, after = self_costs(short), self_costs(long)
    per_request = sent_long - sent
    if per_request <= 0:
        sys.exit(f"the longer run sent no more requests ({sent_long}) than the shorter ({sent})")
    total = (sum(after.values()) - sum(before.values())) / per_request
    rows = sorted(((cost - before.get(name, 0)) / per_request, name) for name, cost in after.items())
    what = f"{args.path} {args.alg}" if verified else args.path
    if pool:
        what += f", every token new ({sent} and {sent_long} requests)"
    print(f"{args.binary} {what}: {total:,.0f} instructions a request")
    for cost, name in reversed(rows[-args.top:]):
        print(f"{cost:8,.0f} {100 * cost / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
