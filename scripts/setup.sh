#!/usr/bin/env bash
# Shared set-up for scripts/run.sh and scripts/test.sh: a virtualenv in .venv
# with pynetmap installed (editable) and, for tests, the test extras and the
# system tools the network tests use.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-run}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want" = test ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  missing=""
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v ethtool >/dev/null 2>&1 || missing="$missing ethtool"
  command -v tcpdump >/dev/null 2>&1 || missing="$missing tcpdump"
  command -v ping >/dev/null 2>&1 || missing="$missing iputils-ping"
  command -v curl >/dev/null 2>&1 || missing="$missing curl"
  command -v setpriv >/dev/null 2>&1 || missing="$missing util-linux"
  { ldconfig -p 2>/dev/null | grep -q 'libpcap\.so' ; } || missing="$missing libpcap0.8"
  if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system tools:$missing"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif [ -n "$missing" ]; then
    echo "note: missing$missing; the tests that need them will skip"
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
