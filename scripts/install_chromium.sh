#!/usr/bin/env bash
# Installs Debian's `chromium` for the dashboard's headless-browser test when it is missing.
# Idempotent and quiet. Always exits 0: when it cannot install, it prints why and records the reason in
# $RAYSCALP_CHROMIUM_NOTE so the test skips with that reason instead of failing.
set -u

NOTE="${RAYSCALP_CHROMIUM_NOTE:-${TMPDIR:-/tmp}/rayscalp-chromium.txt}"

finish() {
    # $1: the reason when chromium is unavailable, empty when it is installed.
    if [ -n "$1" ]; then
        echo "install_chromium: chromium not installed: $1"
        printf '%s\n' "$1" >"$NOTE" 2>/dev/null || true
    else
        rm -f "$NOTE" 2>/dev/null || true
    fi
    exit 0
}

if command -v chromium >/dev/null 2>&1; then
    finish ""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    finish "apt-get is not available (not a Debian/Ubuntu machine); install Chromium and put 'chromium' on PATH"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        finish "installing with apt-get needs root (or password-less sudo); run: sudo apt-get install chromium"
    fi
fi

LOG="$(mktemp "${TMPDIR:-/tmp}/rayscalp-apt.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive

if ! $SUDO apt-get update -qq >"$LOG" 2>&1; then
    finish "apt-get update failed (no network or no mirror?): $(tail -n 1 "$LOG")"
fi
# Fonts come with the package's dependencies; without recommends the page still renders (DejaVu).
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >"$LOG" 2>&1; then
    finish "apt-get install chromium failed: $(tail -n 1 "$LOG")"
fi
if ! command -v chromium >/dev/null 2>&1; then
    finish "apt-get installed the package but no chromium binary is on PATH"
fi
finish ""
