#!/usr/bin/env bash
# Installs a Debian package that a real-service test needs, when its binary is missing.
# Usage: install_debian_package.sh BINARY "PACKAGES..." NOTE_FILE
# Idempotent and quiet. Always exits 0: when it cannot install, it prints why and writes the reason to
# NOTE_FILE so the test skips with that reason instead of failing; on success it removes NOTE_FILE.
set -u

BINARY="$1"
PACKAGES="$2"
NOTE="$3"

finish() {
    # $1: the reason when the binary is unavailable, empty when it is installed.
    if [ -n "$1" ]; then
        echo "install_debian_package: $BINARY not installed: $1"
        printf '%s\n' "$1" >"$NOTE" 2>/dev/null || true
    else
        rm -f "$NOTE" 2>/dev/null || true
    fi
    exit 0
}

if command -v "$BINARY" >/dev/null 2>&1; then
    finish ""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    finish "apt-get is not available (not a Debian/Ubuntu machine); install $PACKAGES and put '$BINARY' on PATH"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        finish "installing with apt-get needs root (or password-less sudo); run: sudo apt-get install $PACKAGES"
    fi
fi

LOG="$(mktemp "${TMPDIR:-/tmp}/rayscalp-apt.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive

# A package's own service is not wanted (tests start their own servers on free ports); without systemd
# running, invoke-rc.d does not start it.
if ! $SUDO apt-get update -qq >"$LOG" 2>&1; then
    finish "apt-get update failed (no network or no mirror?): $(tail -n 1 "$LOG")"
fi
# shellcheck disable=SC2086 # PACKAGES is a word list on purpose
if ! $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >"$LOG" 2>&1; then
    finish "apt-get install $PACKAGES failed: $(tail -n 1 "$LOG")"
fi
if ! command -v "$BINARY" >/dev/null 2>&1; then
    finish "apt-get installed $PACKAGES but no $BINARY binary is on PATH"
fi
finish ""
