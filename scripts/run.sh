#!/usr/bin/env bash
# Install pynetmap and run the main job: pkt-gen rx and pkt-gen tx in two
# processes over the netmap pipe netmap:demo{0 / netmap:demo}0 (no privileges).
# Extra arguments go to both pkt-gen commands (e.g. -l 1514).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
PKTGEN=.venv/bin/pkt-gen
COUNT=${COUNT:-30000000}
CONF="@conf:slots=4096"
"$PKTGEN" -f rx -i "netmap:demo{0$CONF" -n "$COUNT" -b 2048 -w 0 "$@" &
RX=$!
trap 'kill "$RX" 2>/dev/null || true' EXIT
"$PKTGEN" -f tx -i "netmap:demo}0$CONF" -n "$COUNT" -b 2048 -w 0 "$@"
wait "$RX"
trap - EXIT
