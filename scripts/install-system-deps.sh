#!/usr/bin/env bash
# Installs, from Debian's packages, the servers the tests start themselves:
# PostgreSQL (catalog tests on a real server), Prometheus and promtool (the
# scrape test and the alert-rule tests), Chromium (renders the HTML report) and a C
# compiler (the namespace tests build a small clock-skew shim, tests/skewclock.c).
# Skips what is already there; uses sudo when not run as root.
set -euo pipefail
need=()
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    echo "the tests need ${need[*]}: install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
