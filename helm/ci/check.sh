#!/usr/bin/env bash
# Checks the Helm chart, the Grafana dashboard and the alerting rules (see check.py).
# Prepares what it needs itself, without prompting: a virtualenv with requirements.txt,
# openssl and promtool (apt-get, as root or with password-less sudo), and the debug build of
# tokengate (cargo build, in $CARGO_TARGET_DIR as .ci/run sets it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
venv="${TOKENGATE_HELM_VENV:-$HOME/.cache/tokengate-helm-venv}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    as_root apt-get update -q </dev/null
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    # Debian's python3 makes virtualenvs only with python3-venv installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        as_root apt-get update -q </dev/null
        as_root apt-get install -y -q --no-install-recommends python3-venv </dev/null
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/pip" install -q -r helm/ci/requirements.txt </dev/null

cargo build --quiet --bin tokengate </dev/null
exec "$venv/bin/python" helm/ci/check.py --tokengate "$CARGO_TARGET_DIR/debug/tokengate"
