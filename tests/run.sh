#!/usr/bin/env bash
# Runs Lookout's whole test suite on a fresh machine.
#
# The tests start their own throwaway servers (in-process HTTP/TCP/TLS
# targets, and from the installed binaries: unbound, PostgreSQL (initdb +
# postgres), redis-server, mariadbd and prometheus, each on a free loopback
# port with a fresh data directory, and headless chromium); this script only installs the Debian packages they
# need when they are missing, then runs every test target. Debian's server
# packages may try to start their own system services; the tests never use
# those.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/unbound ] || command -v unbound >/dev/null 2>&1 || missing+=(unbound)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
# The SMTP server for the notifier tests runs on Debian's interpreter, which
# may not be the python3 first on PATH.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
# A real Prometheus scrapes /metrics; headless Chromium renders the status page.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
# The side-by-side benchmark (benches/compare.rs) runs its quick mode
# against blackbox_exporter under `cargo test --all-targets`.
[ -x /usr/bin/prometheus-blackbox-exporter ] || missing+=(prometheus-blackbox-exporter)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Debian's unbound package may try to start its own service; the tests
  # never use it, so a failure to start it is not an error here.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --all-targets "$@"
