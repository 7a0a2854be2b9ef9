#!/usr/bin/env bash
# keycam bootstrap: installs what a fresh Debian / Raspberry Pi OS machine needs, then runs one task.
#   scripts/bootstrap.sh demo   -> installs the device + host extras and runs `keycam demo`
#   scripts/bootstrap.sh test   -> installs everything (incl. PyTorch, the unseen SAN evaluation models, mosquitto,
#                                  sshd, socat, swtpm + tpm2-tools, the Mender client) and runs the tests
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-}"; shift || true
case "$task" in demo|test) ;; *) echo "usage: scripts/bootstrap.sh demo|test [args...]" >&2; exit 2;; esac

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== apt-get install ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
apt_install python3-venv python3-dev
if [ "$task" = test ]; then
    apt_install mosquitto openssh-server openssh-client socat dataset-fashion-mnist swtpm tpm2-tools \
        mender-client mender-artifact
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || { echo "== creating .venv"; "$PY" -m venv .venv; }
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
extras="device,host"
[ "$task" = test ] && extras="device,host,train,eval,dev"
echo "== pip install -e .[$extras]"
.venv/bin/python -m pip install -q -e ".[$extras]"

if [ "$task" = demo ]; then
    exec .venv/bin/keycam demo "$@"
fi
echo "== lint-imports (layers and the device contract, setup.cfg [importlinter])"
.venv/bin/lint-imports --no-cache
echo "== ruff check (rules in pyproject.toml)"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
