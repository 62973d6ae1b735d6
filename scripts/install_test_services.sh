#!/usr/bin/env bash
# Debian's `prometheus` for the monitoring tests that run it for real; the reason it is missing goes to
# $RAYSCALP_SERVICES_NOTE so those tests skip with it.
exec bash "$(dirname "$0")/install_debian_package.sh" prometheus prometheus \
    "${RAYSCALP_SERVICES_NOTE:-${TMPDIR:-/tmp}/rayscalp-test-services.txt}"
