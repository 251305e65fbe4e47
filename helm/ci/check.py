#!/usr/bin/env python3
"""Checks the Helm chart, the Grafana dashboard and the alerting rules.

For the default values and each example values file, the chart is linted and rendered with
the Helm library (helm-python-sdk, which embeds Helm's Go SDK), every rendered manifest is
validated against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are
errors), the custom resources against partial schemas written from their CRDs, and the config
in the rendered ConfigMap is checked with `tokengate check` in a directory laid out like the
pod's projected volume. The dashboard's and the rules' expressions may only use the metric
families and labels of the README's Metrics table (the project's contract), and the rules
pass `promtool check rules` and `promtool test rules`.

Usage: check.py --tokengate PATH_TO_BINARY
Run by helm/ci/check.sh, which prepares a virtualenv with the two Python packages.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import os
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHART = ROOT / "helm" / "tokengate"
DASHBOARDS = ROOT / "helm" / "dashboards"
README = ROOT / "README.md"
METRICS_RS = ROOT / "src" / "metrics.rs"

# The chart's minimum (Chart.yaml kubeVersion) and the newest version kubernetes-validate ships.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
RELEASE, NAMESPACE = "tokengate-ci", "ci"

failures: list[str] = []


def fail(what: str) -> None:
    failures.append(what)
    print(f"  FAIL {what}")


def ok(what: str) -> None:
    print(f"  ok   {what}")


def note(what: str) -> None:
    print(f"  note {what}")


# ---------------------------------------------------------------------------------------------
# Chart: render, lint, validate, tokengate check


@contextlib.contextmanager
def helm_log_filter():
    """Helm's Go logger writes to file descriptor 2; drop its notes that the chart's
    dashboards/ link to helm/dashboards is followed (intended), pass on anything else."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if "found symbolic link in path" not in line:
                    print(f"  helm: {line}", file=sys.stderr)


def tls_pair(workdir: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate and key (never stored in the repository)."""
    key, crt = workdir / "ci-tls.key", workdir / "ci-tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=orders.example.com", "-keyout", str(key),
         "-out", str(crt)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )
    return crt.read_text(), key.read_text()


def cases(workdir: Path) -> list[tuple[str, Path, dict | None, str | None]]:
    """(name, chart, values, sidecar application container): the defaults, each example, the
    TLS example with an inline pair, and an application chart that embeds tokengate."""
    out: list[tuple[str, Path, dict | None, str | None]] = [("default values", CHART, None, None)]
    for path in sorted((CHART / "examples").glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        app = values["app"]["name"] if values.get("mode") == "sidecar" else None
        out.append((f"examples/{path.name}", CHART, values, app))
    crt, key = tls_pair(workdir)
    inline = yaml.safe_load((CHART / "examples" / "tls.yaml").read_text())
    inline["tls"] = {"enabled": True, "secretName": "", "cert": crt, "key": key}
    out.append(("examples/tls.yaml with the pair inline (chart-made Secret)", CHART, inline, None))
    out.append(("helm/ci/embedding-chart: an application chart adding tokengate (mode embedded)",
                HERE / "embedding-chart", None, "orders"))
    return out


def external_objects(workdir: Path) -> dict[tuple[str, str], dict[str, bytes]]:
    """(kind, name) -> data of the objects the examples expect to find in the cluster."""
    objects: dict[tuple[str, str], dict[str, bytes]] = {}
    for doc in yaml.safe_load_all((HERE / "external.yaml").read_text()):
        if doc:
            objects[(doc["kind"], doc["metadata"]["name"])] = object_data(doc)
    crt, key = tls_pair(workdir)
    objects[("Secret", "orders-api-tls")] = {"tls.crt": crt.encode(), "tls.key": key.encode()}
    return objects


def object_data(doc: dict) -> dict[str, bytes]:
    if doc["kind"] == "Secret":
        data = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (doc.get("stringData") or {}).items()})
        return data
    return {k: v.encode() for k, v in (doc.get("data") or {}).items()}


def render(chart: helm.Chart, values: dict | None) -> list[dict]:
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"].setdefault("ci/template", template)
                docs.append(doc)
    return docs


def strip_ci(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    annotations = doc["metadata"]["annotations"]
    annotations.pop("ci/template", None)
    if not annotations:
        del doc["metadata"]["annotations"]
    return doc


def crd_schemas() -> dict[str, dict]:
    loaded = yaml.safe_load((HERE / "crd-schemas.yaml").read_text())
    loaded.pop("definitions")
    return loaded


def validate_manifests(docs: list[dict], crds: dict[str, dict], skipped: dict[str, str]) -> None:
    for doc in map(strip_ci, docs):
        kind, name = doc["kind"], doc["metadata"]["name"]
        key = f"{doc['apiVersion']}/{kind}"
        if key in crds:
            try:
                jsonschema.Draft202012Validator(crds[key]).validate(doc)
                ok(f"{kind}/{name}: valid against the partial {key} schema in crd-schemas.yaml")
            except jsonschema.ValidationError as e:
                fail(f"{kind}/{name}: {e.message} at {'/'.join(map(str, e.absolute_path))}")
            skipped[key] = "a CRD: checked against a partial schema written from its CRD, not the full CRD"
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{kind}/{name} (Kubernetes {version}): {e.message} at {'/'.join(map(str, e.absolute_path))}")
                break
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{kind}/{name}: no schema for {key} in Kubernetes {version} nor in crd-schemas.yaml")
                break
        else:
            ok(f"{kind}/{name}: valid (strict) against Kubernetes {' and '.join(KUBE_VERSIONS)}")


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def config_volume(docs: list[dict]) -> dict:
    deployment = find(docs, "Deployment")[0]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    return volumes["tokengate-config"]


def check_config(docs: list[dict], external: dict, tokengate: Path, workdir: Path) -> None:
    """Lays the pod's projected volume out in a directory and runs `tokengate check` on it."""
    root = Path(tempfile.mkdtemp(prefix="etc-tokengate-", dir=workdir))
    rendered = {(d["kind"], d["metadata"]["name"]): object_data(d) for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    for source in config_volume(docs)["projected"]["sources"]:
        (kind, ref), = ((k, v) for k, v in source.items())
        kind = {"configMap": "ConfigMap", "secret": "Secret"}[kind]
        data = rendered.get((kind, ref["name"]))
        origin = "rendered by the chart"
        if data is None:
            data = external.get((kind, ref["name"]))
            origin = "a stand-in from helm/ci/external.yaml or generated"
        if data is None:
            fail(f"projected {kind} {ref['name']}: neither rendered nor in helm/ci/external.yaml")
            continue
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                fail(f"projected {kind} {ref['name']} has no key {item['key']}")
                continue
            target = root / item["path"]
            if target.exists():
                fail(f"two projected sources write {item['path']}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
        note(f"{kind} {ref['name']} ({origin}) -> {', '.join(i['path'] for i in items)}")
    config = root / "tokengate.yaml"
    run = subprocess.run([str(tokengate), "check", "--config", str(config)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if run.returncode == 0:
        ok(f"tokengate check on the rendered config: {run.stdout.strip().replace(str(root) + '/', '')}")
    else:
        fail(f"tokengate check on the rendered config: {run.stderr.strip()}")


def check_pod(docs: list[dict], app_name: str | None) -> None:
    """What the pods must be, beyond schema validity."""
    deployment = find(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    gateway = containers["tokengate"]
    sc, psc = gateway.get("securityContext", {}), pod["spec"].get("securityContext", {})
    hardened = (sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True)
    (ok if hardened else fail)("tokengate runs non-root, read-only root, no privilege escalation, all capabilities dropped")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    probes = (gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
              and gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"})
    (ok if probes else fail)("liveness /healthz and readiness /readyz on the admin port")
    config_map = config_volume(docs)["projected"]["sources"][0]["configMap"]["name"]
    config = yaml.safe_load(find(docs, "ConfigMap", config_map)[0]["data"]["tokengate.yaml"])
    listens = (config["server"]["listen"] == f"0.0.0.0:{ports['http']}"
               and config["admin"]["listen"] == f"0.0.0.0:{ports['admin']}")
    (ok if listens else fail)(f"config listens where the container ports are ({config['server']['listen']}, admin {config['admin']['listen']})")
    checksums = [k for k in pod["metadata"].get("annotations", {}) if k.startswith("checksum/")]
    (ok if checksums == ["checksum/start-only-settings"] else fail)(
        f"the only checksum annotation is the start-only settings one (found {checksums})")
    services = [s for s in find(docs, "Service") if not s["metadata"]["name"].endswith("-metrics")]
    targets = {p["targetPort"] for s in services for p in s["spec"]["ports"]}
    (ok if targets == {"http"} else fail)(f"the Service reaches tokengate's port only (targetPorts {sorted(targets)})")
    if app_name:
        app = containers.get(app_name)
        alone = app is not None and not app.get("ports") and len(containers) == 2
        (ok if alone else fail)("sidecar: the application container sits beside tokengate and declares no port")
        upstream_loopback = all(e.startswith(("http://127.0.0.1:", "http://localhost:"))
                                for u in config["upstreams"].values() for e in u["endpoints"])
        (ok if upstream_loopback else fail)("sidecar: every upstream is on the pod's loopback")


def check_render_failures(chart: helm.Chart) -> None:
    """Values the chart must refuse, with a message naming the value."""
    bad = [
        ({"config": {"server": {"listen": "0.0.0.0:1"}}}, "ports.http"),
        ({"config": {"admin": {"listen": "0.0.0.0:1"}}}, "ports.admin"),
        ({"mode": "sidecar"}, "app.image"),
        ({"mode": "gateway"}, "none of ingress, sidecar and embedded"),
        ({"tls": {"enabled": True}}, "tls.secretName"),
        ({"files": {"a.txt": {"content": "x", "configMap": {"name": "n", "key": "k"}}}}, "exactly one"),
        ({"files": {"../a": {"content": "x"}}}, "one path segment"),
        ({"httpRoute": {"enabled": True}}, "parentRefs"),
    ]
    for values, expected in bad:
        try:
            chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
            fail(f"values {json.dumps(values)} rendered, but must be refused")
        except helm.HelmError as e:
            (ok if expected in str(e) else fail)(f"refused {json.dumps(values)}: ...{expected}...")


def check_restart_checksum(chart: helm.Chart) -> None:
    """A config change must not roll the pods; a start-only setting must."""
    def checksum(values: dict | None) -> str:
        docs = render(chart, values)
        return find(docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/start-only-settings"]
    base = checksum(None)
    routes = copy.deepcopy(chart.values["exampleConfig"])
    routes["routes"][0]["match"] = {"path_prefix": "/other"}
    (ok if checksum({"config": routes}) == base else fail)("a route change leaves the pod template alone (reloads in place)")
    (ok if checksum({"files": {"revoked.txt": {"content": "jti:x\n"}}}) == base else fail)(
        "a revocation file change leaves the pod template alone")
    limits = copy.deepcopy(chart.values["exampleConfig"])
    limits["server"]["max_connections"] = 500
    (ok if checksum({"config": limits}) != base else fail)("a max_connections change rolls the pods (read only at start)")
    (ok if checksum({"ports": {"http": 8443, "admin": 9090}}) != base else fail)("a port change rolls the pods")


def check_chart(tokengate: Path, workdir: Path) -> None:
    print(f"\n== chart {CHART.relative_to(ROOT)} (Helm SDK {helm.helm_sdk_version()} via libhelm_c {helm.helm_c_version()})")
    crds = crd_schemas()
    external = external_objects(workdir)
    skipped: dict[str, str] = {}
    for name, path, values, app in cases(workdir):
        print(f"\n-- {name}")
        with helm.Chart.load(path) as chart:
            report = helm.lint(path, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[0]}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
            infos = [m["error"] for m in report["messages"] if m["severity"] < 2]
            (ok if not problems else fail)(f"helm lint --strict: {problems or 'no warnings or errors'}" + (f" (info: {'; '.join(infos)})" if infos else ""))
            try:
                docs = render(chart, values)
            except helm.HelmError as e:
                fail(f"render: {e}")
                continue
            kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
            note(f"rendered {len(docs)} objects: {', '.join(kinds)}")
            validate_manifests(docs, crds, skipped)
            for rule in find(docs, "PrometheusRule"):
                check_prometheus_rule(rule, workdir)
            check_pod(docs, app)
            check_config(docs, external, tokengate, workdir)
    with helm.Chart.load(CHART) as chart:
        print("\n-- values the chart refuses")
        check_render_failures(chart)
        print("\n-- what rolls the pods")
        check_restart_checksum(chart)
    for key, why in sorted(skipped.items()):
        note(f"not validated against Kubernetes schemas: {key} ({why})")


def check_prometheus_rule(rule: dict, workdir: Path) -> None:
    path = workdir / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    (ok if run.returncode == 0 else fail)(f"PrometheusRule spec passes promtool check rules{'' if run.returncode == 0 else ': ' + run.stdout + run.stderr}")


# ---------------------------------------------------------------------------------------------
# Dashboard and rules: only the contract's metric families and labels

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan", "atan2"}
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}


def contract_metrics() -> dict[str, set[str]]:
    """Family -> labels, from the README's Metrics table (the project's contract); histograms
    add their _bucket (with le), _sum and _count series."""
    text = README.read_text()
    section = text[text.index("\n## Metrics"):]
    section = section[: section.index("\n## ", 1)]
    families: dict[str, set[str]] = {}
    for name, kind, labels in re.findall(r"^\| `(tokengate_\w+)`( \(\w+\))? \|([^|]*)\|", section, re.M):
        labels = {l.strip() for l in re.sub(r"\([^)]*\)", "", labels).split(",") if l.strip()}
        families[name] = labels
        if kind.strip() == "(histogram)":
            families[name + "_bucket"] = labels | {"le"}
            families[name + "_sum"] = labels
            families[name + "_count"] = labels
    return families


def expression_problems(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """Metric names and labels in a PromQL expression that the contract does not have."""
    problems = []
    expr = re.sub(r"\$\{\w+\}|\$\w+", "VAR", expr)                # Grafana variables
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", expr)
    grouped: set[str] = set()
    if label_values:
        expr, label = label_values.groups()
        grouped.add(label)
    expr = re.sub(r"\[[^\]]*\]", "", expr)                         # ranges and subqueries
    used: list[str] = []

    def selector(m: re.Match) -> str:
        name, body = m.group(1), m.group(2)
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", body):
            if name in metrics and label not in metrics[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
        return f" {name} "
    expr = re.sub(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", selector, expr)
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        grouped.update(l.strip() for l in m.group(1).split(",") if l.strip())
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\"[^\"]*\"", " ", expr)
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_KEYWORDS or word == "VAR" or re.fullmatch(r"\d\w*", word):
            continue
        used.append(word)
        if word not in metrics:
            problems.append(f"{word} is not a metric of the contract")
    available = set().union(*(metrics.get(u, set()) for u in used)) | TARGET_LABELS
    for label in grouped - available:
        problems.append(f"label {label} is on none of {sorted(set(used))}")
    return problems


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str]]:
    out = []

    def panels(items: list[dict]) -> None:
        for panel in items:
            for target in panel.get("targets", []):
                out.append((f"panel {panel.get('title')!r}", target["expr"]))
            panels(panel.get("panels", []))
    panels(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable ${var['name']}", query))
    return out


def check_dashboard_and_rules(workdir: Path) -> None:
    print("\n== dashboard and alerting rules")
    metrics = contract_metrics()
    families = sorted(m for m in metrics if not m.endswith(("_bucket", "_sum", "_count")) or m[: m.rindex("_")] not in metrics)
    code = METRICS_RS.read_text()
    missing = [f for f in families if f'"{f}"' not in code]
    (ok if len(families) >= 11 and not missing else fail)(
        f"{len(families)} metric families in the README's Metrics table, each registered in src/metrics.rs{f' (missing: {missing})' if missing else ''}")

    # The check must be able to fail: each of these must be reported.
    for bad in ['rate(tokengate_request_total[5m])', 'sum by (path) (rate(tokengate_requests_total[5m]))',
                'tokengate_jwks_keys_bucket', 'tokengate_upstream_errors_total{kind="timeout", route="x"}',
                'label_values(tokengate_requests_total, upstream)']:
        (ok if expression_problems(bad, metrics) else fail)(f"the metric check refuses {bad}")

    dashboard = json.loads((DASHBOARDS / "tokengate.json").read_text())
    datasource = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    (ok if datasource and datasource[0]["query"] == "prometheus" else fail)("dashboard: the data source is a variable")
    exprs = dashboard_expressions(dashboard)
    seen: set[str] = set()
    for where, expr in exprs:
        problems = expression_problems(expr, metrics)
        for p in problems:
            fail(f"dashboard {where}: {p}")
        seen.update(re.findall(r"tokengate_\w+", expr))
    ok(f"dashboard: {len(exprs)} expressions use only contract metrics and labels")
    unused = {f for f in families} - {re.sub(r"_(bucket|sum|count)$", "", s) for s in seen}
    (ok if not unused else fail)(f"dashboard: every metric family is shown{f' (not shown: {sorted(unused)})' if unused else ''}")

    rules = yaml.safe_load((DASHBOARDS / "alerts.yaml").read_text())
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule.get("alert") or rule.get("record"))
            for p in expression_problems(rule["expr"], metrics):
                fail(f"rule {names[-1]}: {p}")
    ok(f"rules: {len(names)} expressions use only contract metrics and labels")
    tests = yaml.safe_load((DASHBOARDS / "alerts.test.yaml").read_text())
    tested = {t["alertname"] for test in tests["tests"] for t in test.get("alert_rule_test", [])}
    untested = set(names) - tested
    (ok if not untested else fail)(f"rules: every alert has a unit test{f' (untested: {sorted(untested)})' if untested else ''}")
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        run = subprocess.run(["promtool", *args], cwd=DASHBOARDS, capture_output=True, text=True)
        output = " ".join((run.stdout + run.stderr).split())
        (ok if run.returncode == 0 else fail)(f"promtool {' '.join(args)}: {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokengate", type=Path, required=True, help="the tokengate binary")
    args = parser.parse_args()
    started = time.monotonic()
    helm.disable_logging()
    with tempfile.TemporaryDirectory(prefix="tokengate-helm-ci-") as tmp:
        with helm_log_filter():
            check_chart(args.tokengate.resolve(), Path(tmp))
        check_dashboard_and_rules(Path(tmp))
    print(f"\nhelm checks: {len(failures)} failed, {time.monotonic() - started:.1f}s")
    for f in failures:
        print(f"  FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
