#!/usr/bin/env python3
"""tokengate side by side with the proxies people would use instead, in one run, per core.

Starts on 127.0.0.1 an nginx upstream (`return 200`), then, each with one worker:
  - tokengate verifying RS256 or ES256 bearer tokens (and, as a plain proxy, an anonymous route),
  - HAProxy 2.6 with native jwt_verify (RS256 and ES256, with alg, exp, iss and aud checks),
  - HAProxy and nginx as plain proxies that check nothing (nginx also with the very requests
    tokengate verifies, tokens and all, so that the price of checking is all that differs),
  - the upstream directly.
The proxy under test runs on CPU 0; wrk and the upstream on CPU 1. wrk sends tokens that
rotate through N distinct valid tokens (1, 10 000, or "new": a pool large enough that no
token repeats within a round). After an unmeasured warm-up of each target (caches filled),
rounds interleave the targets (A B C A B C ...) so that drift hits all alike; each round
ends with `openssl speed` on CPU 0 (the machine's own verification limit, which drifts too).
The report gives median req/s, the proxy's own CPU time per request (from /proc: its cost
per core even when wrk, not the proxy, sets the pace) and p50/p99/p99.9 latency per target,
ratios by throughput and by CPU time (of the medians; and each round's own ratio, against its
own `openssl speed`, given by its median and its lowest and highest over the rounds), as a
Markdown table, JSON and a PNG chart.

    python3 benches/load/compare.py                     # 3 rounds of 5 s, 32 connections
    python3 benches/load/compare.py --rounds 5 --duration 10 --out target/bench-load
    python3 benches/load/compare.py --from-report target/bench-load/report.json   # tables again

Needs wrk, nginx, haproxy and openssl (Debian: wrk nginx-light haproxy openssl) and the Python
packages cryptography and matplotlib (installed with pip when missing). Every process it starts
is stopped by PID when it ends; everything listens on 127.0.0.1 only.
"""

import argparse
import base64
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://idp.bench.local"
AUDIENCE = "orders-api"


def need_python_packages(modules=("cryptography", "matplotlib")):
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def need_tools(tools=("wrk", "nginx", "haproxy", "openssl", "taskset"),
               packages="wrk nginx-light haproxy openssl util-linux"):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install {packages}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} never opened")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Keys:
    """An RS256 and an ES256 key, kept in the work directory so cached tokens stay valid."""

    def __init__(self, work: Path):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.private = {}
        for alg, make in [("RS256", lambda: rsa.generate_private_key(65537, 2048)),
                          ("ES256", lambda: ec.generate_private_key(ec.SECP256R1()))]:
            path = work / f"{alg}.key.pem"
            if path.exists():
                key = serialization.load_pem_private_key(path.read_bytes(), None)
            else:
                key = make()
                path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            self.private[alg] = key
            public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
            (work / f"{alg}.pub.pem").write_bytes(public_pem)
        rsa_numbers = self.private["RS256"].public_key().public_numbers()
        ec_numbers = self.private["ES256"].public_key().public_numbers()
        self.jwks = {"keys": [
            {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig",
             "n": int_b64(rsa_numbers.n), "e": int_b64(rsa_numbers.e)},
            {"kty": "EC", "kid": "es", "alg": "ES256", "use": "sig", "crv": "P-256",
             "x": b64url(ec_numbers.x.to_bytes(32, "big")), "y": b64url(ec_numbers.y.to_bytes(32, "big"))},
        ]}
        (work / "jwks.json").write_text(json.dumps(self.jwks))


def _sign_range(args):
    key_path, alg, start, count, exp = args
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    header = b64url(json.dumps({"alg": alg, "kid": "rs" if alg == "RS256" else "es", "typ": "JWT"},
                               separators=(",", ":")).encode())
    now = int(time.time())
    out = []
    for i in range(start, start + count):
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{i % 1000}", "jti": f"t-{i}",
                  "scope": "orders.read", "iat": now - 60, "exp": exp}
        message = f"{header}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}".encode()
        if alg == "RS256":
            signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        out.append(f"{message.decode()}.{b64url(signature)}")
    return out


def tokens_file(work: Path, alg: str, count: int) -> Path:
    """`count` distinct valid tokens, one a line, made once and kept (valid for 7 days)."""
    path = work / f"tokens-{alg}-{count}.txt"
    if path.exists() and path.stat().st_mtime > time.time() - 6 * 86400:
        return path
    exp = int(time.time()) + 7 * 86400
    workers = max(1, os.cpu_count() or 1)
    chunk = (count + workers - 1) // workers
    jobs = [(str(work / f"{alg}.key.pem"), alg, w * chunk, min(chunk, count - w * chunk), exp)
            for w in range(workers) if w * chunk < count]
    started = time.time()
    # Fresh interpreters, not forks: a fork copies whatever lock another thread held at that
    # moment (and this script's SIGTERM handler), and a worker stuck on one hangs the run.
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        lines = [t for part in pool.map(_sign_range, jobs) for t in part]
    path.write_text("\n".join(lines) + "\n")
    print(f"  made {count} {alg} tokens in {time.time() - started:.1f} s", flush=True)
    return path


class Processes:
    def __init__(self):
        self.children = []

    def start(self, args, cpu, env=None, log=None):
        command = ["taskset", "-c", str(cpu), *args]
        out = open(log, "w") if log else subprocess.DEVNULL
        child = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(child)
        return child

    def stop(self):
        for child in self.children:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in self.children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def child_pid(parent: int) -> int:
    deadline = time.time() + 5
    while time.time() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                return int(stat.parent.name)
        time.sleep(0.05)
    raise RuntimeError(f"process {parent} has no child")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU seconds of `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_wrk_measured(pid, url, tokens, duration, connections, offset=0):
    """`run_wrk`, with the CPU time of the proxy process `pid` a request added to its result:
    `cpu_us_per_request`, of it `kernel_us_per_request`, and `cpu_share` of one core. That is
    the proxy's cost per core whether or not the load generator kept it busy; the kernel's part
    apart, as the system calls of a proxied request are much the same for every proxy."""
    before = cpu_times(pid)
    result = run_wrk(url, tokens, duration, connections, offset)
    user, kernel = (after - before for after, before in zip(cpu_times(pid), before))
    per_request = 1e6 / max(1, result["requests"])
    result["cpu_us_per_request"] = (user + kernel) * per_request
    result["kernel_us_per_request"] = kernel * per_request
    result["cpu_share"] = (user + kernel) / result["seconds"]
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_upstream(work: Path, procs: Processes, port: int):
    """The upstream every target forwards to: nginx answering 200 on CPU 1."""
    (work / "upstream.conf").write_text(f"""
daemon off; worker_processes 1; pid {work}/upstream.pid; error_log {work}/upstream-error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }} }}
""")
    procs.start(["nginx", "-c", str(work / "upstream.conf"), "-e", str(work / "upstream-error.log")], cpu=1)


def write_tokengate_config(work: Path, port: int, admin_port: int, upstream: int) -> Path:
    """tokengate's config: an anonymous route `/plain` and a verified one `/verified`."""
    path = work / "tokengate.yaml"
    path.write_text(f"""
server:
  listen: "127.0.0.1:{port}"
admin:
  listen: "127.0.0.1:{admin_port}"
issuers:
  - name: bench
    issuer: "{ISSUER}"
    audiences: [{AUDIENCE}]
    algorithms: [RS256, ES256]
    jwks: {{ file: "{work}/jwks.json" }}
upstreams:
  app:
    endpoints: ["http://127.0.0.1:{upstream}"]
routes:
  - name: plain
    match: {{ path_prefix: /plain }}
    upstream: app
    auth: none
  - name: verified
    match: {{ path_prefix: /verified }}
    upstream: app
    auth:
      scopes: {{ all_of: [orders.read] }}
""")
    return path


def nginx_proxy(work: Path, port: int, upstream: int, one_process: bool = False) -> list[str]:
    """Writes the config of nginx as a plain proxy (one worker, upstream connections kept) and
    returns the command that runs it; `one_process` does without the master process."""
    master = "master_process off; " if one_process else ""
    (work / "nginx-proxy.conf").write_text(f"""
{master}daemon off; worker_processes 1; pid {work}/proxy.pid; error_log {work}/proxy-error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 10000000;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    return ["nginx", "-c", str(work / "nginx-proxy.conf"), "-e", str(work / "proxy-error.log")]


def floor_proxy(port: int, upstream: int) -> list[str]:
    """Builds `benches/hyper_floor.rs` (optimised, as a bench) and returns the command that runs
    it: hyper's HTTP/1.1 server and client passing requests through with nothing else, the
    floor under tokengate's cost a request."""
    built = subprocess.run(["cargo", "bench", "--bench", "hyper_floor", "--no-run", "--quiet",
                            "--message-format=json"], cwd=ROOT, capture_output=True, text=True)
    for line in built.stdout.splitlines():
        message = json.loads(line)
        if message.get("target", {}).get("name") == "hyper_floor" and message.get("executable"):
            return [message["executable"], "--listen", f"127.0.0.1:{port}",
                    "--upstream", f"127.0.0.1:{upstream}"]
    sys.exit(f"cargo bench --bench hyper_floor --no-run failed:\n{built.stderr}")


def start_targets(work: Path, procs: Processes, ports: dict):
    upstream = ports["upstream"]
    start_upstream(work, procs, upstream)

    nginx_master = procs.start(nginx_proxy(work, ports["nginx"], upstream), cpu=0)

    def jwt_frontend(name, port, alg):
        return f"""
frontend {name}
  bind 127.0.0.1:{port}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str {alg} }}
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
  http-request deny deny_status 401 unless {{ var(txn.iss) -m str {ISSUER} }}
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
  http-request deny deny_status 401 unless {{ var(txn.aud) -m str {AUDIENCE} }}
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{work}/{alg}.pub.pem") -m int 1 }}
  default_backend app
"""
    (work / "haproxy.cfg").write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend plain
  bind 127.0.0.1:{ports['haproxy']}
  default_backend app
{jwt_frontend('jwt_rs256', ports['haproxy_rs256'], 'RS256')}
{jwt_frontend('jwt_es256', ports['haproxy_es256'], 'ES256')}
backend app
  http-reuse always
  server upstream 127.0.0.1:{upstream}
""")
    haproxy = procs.start(["haproxy", "-f", str(work / "haproxy.cfg")], cpu=0, log=work / "haproxy.log")

    config = write_tokengate_config(work, ports["tokengate"], ports["tokengate_admin"], upstream)
    # The peers first, so that tokengate's start-up is timed on a quiet CPU 0 (HAProxy also
    # starts there).
    for name, port in ports.items():
        if not name.startswith("tokengate"):
            wait_port(port)
    time.sleep(0.2)
    started = time.time()
    gateway = procs.start([str(ROOT / "target/release/tokengate"), "serve", "--config", str(config)],
                          cpu=0, env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, log=work / "tokengate.log")
    ready_ms = None
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['tokengate_admin']}/readyz", timeout=0.5) as r:
                if r.status == 200:
                    ready_ms = (time.time() - started) * 1000
                    break
        except OSError:
            time.sleep(0.005)
    wait_port(ports["tokengate"])
    time.sleep(0.3)
    # The processes whose CPU time is the proxy's (nginx's worker, not its master).
    pids = {"nginx": child_pid(nginx_master.pid), "haproxy": haproxy.pid, "tokengate": gateway.pid}
    return gateway, ready_ms, pids


def run_wrk(url, tokens, duration, connections, offset=0):
    args = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
            "-s", str(Path(__file__).with_name("rotate.lua")), url, "--", str(tokens or ""), str(offset)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30).stdout
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk printed no result:\n{out}")


def openssl_verify_per_second():
    out = subprocess.run(["taskset", "-c", "0", "openssl", "speed", "-seconds", "3", "rsa2048", "ecdsap256", "ed25519"],
                         capture_output=True, text=True).stdout
    rates = {}
    for line in out.splitlines():
        line, parts = line.strip(), line.split()
        try:
            if line.startswith("rsa 2048 bits"):
                rates["RS256"] = float(parts[-1])
            elif line.startswith("256 bits ecdsa"):
                rates["ES256"] = float(parts[-1])
            elif "(Ed25519)" in line:
                rates["EdDSA"] = float(parts[-1])
        except ValueError:
            pass
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=4,
                        help="seconds each target runs, unmeasured, before the first round (enough "
                             "for tokengate to see each of 10 000 ES256 tokens twice: it caches a "
                             "token on its second verification)")
    parser.add_argument("--new-pool", type=int,
                        help="tokens for the 'every token new' runs, shared out among the rounds "
                             "(default: enough for 26 000 requests a second, at least 400 000)")
    parser.add_argument("--out", default=str(ROOT / "target/bench-load"))
    parser.add_argument("--from-report", metavar="REPORT_JSON",
                        help="measure nothing: write the tables and chart again from a run's "
                             "report.json (into --out)")
    args = parser.parse_args()
    if args.from_report:
        need_python_packages(("matplotlib",))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_report(json.loads(Path(args.from_report).read_text()), out)
        return
    if args.new_pool is None:
        args.new_pool = max(400_000, args.rounds * args.duration * 26_000)

    need_tools()
    need_python_packages()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    print("building tokengate (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    Keys(work)
    print("making tokens", flush=True)
    token_files = {(alg, n): tokens_file(work, alg, n) for alg in ["RS256", "ES256"] for n in [1, 10_000]}
    token_files[("RS256", "new")] = tokens_file(work, "RS256", args.new_pool)
    token_files[("ES256", "new")] = tokens_file(work, "ES256", args.new_pool)

    ports = {name: free_port() for name in ["upstream", "nginx", "haproxy", "haproxy_rs256", "haproxy_es256",
                                            "tokengate", "tokengate_admin"]}
    procs = Processes()
    results = {}
    speeds = []
    try:
        gateway, ready_ms, pids = start_targets(work, procs, ports)
        idle_rss = rss_kib(gateway.pid)
        targets = [
            ("upstream direct", f"http://127.0.0.1:{ports['upstream']}/", None),
            ("nginx plain proxy", f"http://127.0.0.1:{ports['nginx']}/", None),
            # The same requests as "tokengate RS256 N=10000", tokens and all, which nginx ignores.
            ("nginx plain proxy RS256 N=10000", f"http://127.0.0.1:{ports['nginx']}/", token_files[("RS256", 10_000)]),
            ("haproxy plain proxy", f"http://127.0.0.1:{ports['haproxy']}/", None),
            ("tokengate plain proxy", f"http://127.0.0.1:{ports['tokengate']}/plain", None),
        ]
        for alg in ["RS256", "ES256"]:
            for n in [1, 10_000, "new"]:
                tokens = token_files[(alg, n)]
                targets.append((f"haproxy jwt_verify {alg} N={n}", f"http://127.0.0.1:{ports['haproxy_' + alg.lower()]}/", tokens))
                targets.append((f"tokengate {alg} N={n}", f"http://127.0.0.1:{ports['tokengate']}/verified", tokens))
        # Steady state is what is compared: caches filled (tokengate's verified tokens, the
        # connection pools), so that the first round is not the only one paying for them.
        # "Every token new" has no steady state to reach and keeps its pool for the rounds.
        if args.warmup > 0:
            print(f"warm-up, {args.warmup} s a target", flush=True)
            for name, url, tokens in targets:
                if not name.endswith("N=new"):
                    run_wrk(url, tokens, args.warmup, args.connections)
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            for name, url, tokens in targets:
                # "Every token new": each round starts at its own share of the pool, so no round
                # reuses a token another round has already sent (and the gateway has cached).
                new = name.endswith("N=new")
                share = args.new_pool // args.rounds
                offset = (round_no - 1) * share if new else 0
                proxy = name.split()[0]
                if proxy in pids:
                    result = run_wrk_measured(pids[proxy], url, tokens, args.duration,
                                              args.connections, offset)
                else:  # the upstream directly: no proxy to measure
                    result = run_wrk(url, tokens, args.duration, args.connections, offset)
                if new and result["requests"] > share:
                    result["tokens_repeated"] = result["requests"] - share
                results.setdefault(name, []).append(result)
                flag = "" if result["non_2xx"] == 0 and result["socket_errors"] == 0 else \
                    f"  (non-2xx {result['non_2xx']}, socket errors {result['socket_errors']})"
                if result.get("tokens_repeated"):
                    flag += f"  ({result['tokens_repeated']} tokens repeated: raise --new-pool)"
                print(f"  {name:32s} {result['rps']:10.0f} req/s  p99 {result['p99_us']:6d} us{flag}", flush=True)
            # The machine's own limit is a target of the round like the others (every proxy
            # idle meanwhile): one measurement at the end would be one sample of a speed that
            # drifts as much as the proxies' does, and the ratios below divide by it.
            rates = openssl_verify_per_second()
            speeds.append(rates)
            print("  openssl speed verify/s on CPU 0     "
                  + ", ".join(f"{alg} {rate:.0f}" for alg, rate in rates.items()), flush=True)
        loaded_rss = rss_kib(gateway.pid)
    finally:
        procs.stop()

    verify_limit = {alg: statistics.median(rates[alg] for rates in speeds)
                    for alg in speeds[0] if all(alg in rates for rates in speeds)} if speeds else {}
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs)
            if "cpu_us_per_request" in runs[0] else None,
            "kernel_us_per_request": statistics.median(r["kernel_us_per_request"] for r in runs)
            if "kernel_us_per_request" in runs[0] else None,
            "p50_us": statistics.median(r["p50_us"] for r in runs),
            "p99_us": statistics.median(r["p99_us"] for r in runs),
            "p999_us": statistics.median(r["p999_us"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "rounds": runs,
        }
    report = {
        "machine": {"cpus": os.cpu_count(), "note": "proxy on CPU 0; wrk and the upstream on CPU 1"},
        "settings": vars(args),
        "tokengate": {"ready_ms_with_file_jwks": ready_ms, "idle_rss_kib": idle_rss, "rss_after_load_kib": loaded_rss},
        "openssl_verify_per_second": verify_limit,
        "openssl_verify_per_second_rounds": speeds,
        "results": summary,
    }
    write_report(report, out)


def ratios_of(figures: dict, verify_limit: dict) -> dict:
    """The comparisons the targets ask for, from one set of figures per target (the medians
    of a run, or one round's) and the `openssl speed` verify/s that go with them."""
    def rps(name):
        return figures[name]["rps"]

    def cpu(name):
        return figures[name].get("cpu_us_per_request")

    # Speed ratios, tokengate against a peer: by throughput, and by each proxy's own CPU time
    # per request (the peer's over tokengate's, so that above 1 is faster either way).
    pairs = [
        ("tokengate RS256 N=10000", "haproxy jwt_verify RS256 N=10000", " (target >= 1.5)"),
        ("tokengate ES256 N=10000", "haproxy jwt_verify ES256 N=10000", ""),
        ("tokengate RS256 N=10000", "nginx plain proxy RS256 N=10000", ", the same requests (target >= 0.9)"),
        ("tokengate RS256 N=10000", "nginx plain proxy", " without tokens"),
        ("tokengate plain proxy", "nginx plain proxy", ""),
    ]
    ratios = {}
    for ours, peer, note in pairs:
        ratios[f"{ours} / {peer}{note}"] = rps(ours) / rps(peer)
        if cpu(ours) and cpu(peer):
            ratios[f"{ours} / {peer}, by CPU per request"] = cpu(peer) / cpu(ours)
    ratios["tokengate RS256 N=10000 p99 / haproxy jwt_verify RS256 N=10000 p99 (target <= 1.0)"] = \
        figures["tokengate RS256 N=10000"]["p99_us"] / max(1, figures["haproxy jwt_verify RS256 N=10000"]["p99_us"])

    # Every token new: what verifying costs beyond proxying, as verifications per second of one
    # core, against openssl's. Proxying is the same request with its token already verified
    # (N=1, a cache hit), so that only verifying differs. Read from the gateway's own CPU
    # time per request (per core, as the target says) and, as a cross-check, from throughput.
    for alg in ["RS256", "ES256"]:
        if alg in verify_limit:
            by_cpu = (cpu(f"tokengate {alg} N=new") - cpu(f"tokengate {alg} N=1")) / 1e6
            by_rps = 1 / rps(f"tokengate {alg} N=new") - 1 / rps(f"tokengate {alg} N=1")
            if by_cpu > 0:
                ratios[f"tokengate {alg} every token new: verifications per core-second beyond proxying / openssl verify/s (target >= 0.8)"] = \
                    (1 / by_cpu) / verify_limit[alg]
            if by_rps > 0:
                ratios[f"tokengate {alg} every token new, the same read from throughput (1/rps N=new - 1/rps N=1)"] = \
                    (1 / by_rps) / verify_limit[alg]
            # The same measure for HAProxy, whose signature check is OpenSSL's own code: a
            # yardstick for what verifying under this load costs beyond `openssl speed`. It
            # has no cache, so its proxying is the plain proxy (bare requests: a little less
            # work than relaying tokens, so its figure comes out a little low).
            peer = cpu(f"haproxy jwt_verify {alg} N=new") - cpu("haproxy plain proxy")
            if peer > 0:
                ratios[f"haproxy jwt_verify {alg} every token new, the same measure (beyond its plain proxying), for comparison"] = \
                    1e6 / peer / verify_limit[alg]
    return ratios


def write_report(report: dict, out: Path):
    """Ratios of the run's medians, and the median, lowest and highest of each round's own
    ratios (each round's figures against that round's `openssl speed`); then report.json,
    report.md and report.png.

    The two medians differ when a target stalls in some rounds: a peer's p99 of 40 ms in three
    rounds of five makes the ratio of the medians tiny, while the median of the rounds' ratios
    compares the two within the minutes each round shared."""
    summary = report["results"]
    rounds = min(len(s["rounds"]) for s in summary.values())
    # Reports from before `openssl speed` ran in every round have its one measurement.
    speeds = report.setdefault("openssl_verify_per_second_rounds",
                               [report["openssl_verify_per_second"]] * rounds)
    report["ratios"] = ratios_of(summary, report["openssl_verify_per_second"])
    per_round = [ratios_of({name: s["rounds"][i] for name, s in summary.items()}, speeds[i])
                 for i in range(rounds)]
    report["ratios_per_round"] = {key: [r.get(key) for r in per_round] for key in report["ratios"]}
    report["ratios_median_of_rounds"] = {
        key: statistics.median(known) if (known := [v for v in values if v is not None]) else None
        for key, values in report["ratios_per_round"].items()}
    (out / "report.json").write_text(json.dumps(report, indent=2))

    lines = ["| target | req/s (median) | proxy CPU µs/request | of it kernel | p50 µs | p99 µs | p99.9 µs | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def micros(value):
        return "" if value is None else f"{value:.1f}"

    for name, s in summary.items():
        lines.append(f"| {name} | {s['rps']:.0f} | {micros(s['cpu_us_per_request'])} | "
                     f"{micros(s.get('kernel_us_per_request'))} | {s['p50_us']:.0f} | {s['p99_us']:.0f} | "
                     f"{s['p999_us']:.0f} | {s['non_2xx'] + s['socket_errors']} |")

    def spread(values):
        known = [v for v in values if v is not None]
        return f"{min(known):.2f}–{max(known):.2f}" if known else ""

    def ratio(value):
        return "" if value is None else f"{value:.2f}"

    lines += ["", f"| ratio | of the medians | {rounds} rounds: median | lowest–highest |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {k} | {v:.2f} | {ratio(report['ratios_median_of_rounds'][k])} | "
              f"{spread(report['ratios_per_round'][k])} |" for k, v in report["ratios"].items()]
    verify_limit, tg = report["openssl_verify_per_second"], report["tokengate"]
    lines += ["", f"tokengate ready in {tg['ready_ms_with_file_jwks']:.0f} ms with file-based JWKS; RSS idle "
                  f"{tg['idle_rss_kib'] / 1024:.1f} MiB, after the runs {tg['rss_after_load_kib'] / 1024:.1f} MiB. "
                  f"openssl verify/s on CPU 0, the median of {rounds} rounds: {verify_limit}; lowest and highest: "
                  + ", ".join(f"{alg} {min(r[alg] for r in speeds):.0f}–{max(r[alg] for r in speeds):.0f}"
                              for alg in verify_limit) + "."]
    table = "\n".join(lines)
    (out / "report.md").write_text(table + "\n")
    print("\n" + table)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(summary)
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(names) + 1.5))
    colors = ["#2b7bba" if n.startswith("tokengate") else "#999999" for n in names]
    ax.barh(names, [summary[n]["rps"] for n in names], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median of rounds), one proxy core")
    settings = report["settings"]
    ax.set_title(f"tokengate and peers, {settings['rounds']} interleaved rounds of {settings['duration']} s, "
                 f"{settings['connections']} connections")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    print(f"\nwrote {out / 'report.md'}, {out / 'report.json'}, {out / 'report.png'}")


if __name__ == "__main__":
    # On SIGTERM, unwind as on Ctrl-C, so that every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
