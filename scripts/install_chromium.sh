#!/usr/bin/env bash
# Debian's `chromium` for the dashboard's headless-browser test; the reason it is missing goes to
# $RAYSCALP_CHROMIUM_NOTE so the test skips with it. Fonts come with DejaVu (the page renders without recommends).
exec bash "$(dirname "$0")/install_debian_package.sh" chromium "chromium fonts-dejavu-core" \
    "${RAYSCALP_CHROMIUM_NOTE:-${TMPDIR:-/tmp}/rayscalp-chromium.txt}"
