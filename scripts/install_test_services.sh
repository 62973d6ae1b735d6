#!/usr/bin/env bash
# Installs the services the monitoring tests run for real (Debian's `prometheus`) when they are missing.
# Idempotent and quiet. Always exits 0: when it cannot install, it prints why and records the reason in
# $RAYSCALP_SERVICES_NOTE so the tests skip with that reason instead of failing.
set -u

NOTE="${RAYSCALP_SERVICES_NOTE:-${TMPDIR:-/tmp}/rayscalp-test-services.txt}"

finish() {
    # $1: the reason when prometheus is unavailable, empty when it is installed.
    if [ -n "$1" ]; then
        echo "install_test_services: prometheus not installed: $1"
        printf '%s\n' "$1" >"$NOTE" 2>/dev/null || true
    else
        rm -f "$NOTE" 2>/dev/null || true
    fi
    exit 0
}

if command -v prometheus >/dev/null 2>&1; then
    finish ""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    finish "apt-get is not available (not a Debian/Ubuntu machine); install Prometheus 2.x and put it on PATH"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        finish "installing with apt-get needs root (or password-less sudo); run: sudo apt-get install prometheus"
    fi
fi

LOG="$(mktemp "${TMPDIR:-/tmp}/rayscalp-apt.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive

# The package's own service is not wanted (tests start their own server on a free port); without systemd
# running, invoke-rc.d does not start it.
if ! $SUDO apt-get update -qq >"$LOG" 2>&1; then
    finish "apt-get update failed (no network or no mirror?): $(tail -n 1 "$LOG")"
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends prometheus >"$LOG" 2>&1; then
    finish "apt-get install prometheus failed: $(tail -n 1 "$LOG")"
fi
if ! command -v prometheus >/dev/null 2>&1; then
    finish "apt-get installed the package but no prometheus binary is on PATH"
fi
finish ""
