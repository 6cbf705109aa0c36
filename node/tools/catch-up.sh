#!/usr/bin/env bash
# How fast a validator that was down catches up by block sync.
#
# Three of four validators of a generated local network run while
# `trellis bench` loads them; then the fourth starts from genesis and the
# script times it until it reaches the height the others had when the load
# ended. Everything listens on loopback (API ports 18080-18083, peer ports
# 36656-36659) in a temporary directory that is removed at the end.
#
#   node/tools/catch-up.sh <dir with trellis and trellis-node> [rate] [duration]
#   node/tools/catch-up.sh target/production 2500 60s
set -euo pipefail
bin=$(cd "$1" && pwd); rate=${2:-2500}; duration=${3:-60s}
work=$(mktemp -d); pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; sleep 1; kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap stop EXIT
height() { "$bin/trellis" --node "http://127.0.0.1:$1" --output json status 2>/dev/null | sed -n 's/.*"height": *\([0-9]*\).*/\1/p'; }
start() { "$bin/trellis-node" --config "$work/net/validator-$1/config.toml" > "$work/validator-$1.log" 2>&1 & pids+=($!); }

"$bin/trellis-node" genesis generate --validators 4 --out "$work/net" --base-api-port 18080 --base-p2p-port 36656 > /dev/null
for i in 0 1 2; do start $i; done
until [ -n "$(height 18080)" ]; do sleep 0.2; done
node_pids=(); for p in "${pids[@]}"; do node_pids+=(--node-pid "$p"); done
"$bin/trellis" --node http://127.0.0.1:18080 bench --rate "$rate" --duration "$duration" "${node_pids[@]}" > "$work/bench.txt" 2>&1
sleep 2
target=$(height 18080)
txs=$(curl -s http://127.0.0.1:18080/metrics | awk '/^trellis_committed_txs_total/ {print $2}')
began=$(date +%s.%N)
start 3
until h=$(height 18083) && [ -n "$h" ] && [ "$h" -ge "$target" ]; do sleep 0.1; done
ended=$(date +%s.%N)
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/${pids[3]}/stat")
awk -v s="$began" -v e="$ended" -v t="$target" -v n="$txs" -v c="$cpu" 'BEGIN {
  printf "caught up %d blocks, %d transactions, in %.2f s (from its start): %.0f transactions a second, node CPU %.1f s\n", t, n, e - s, n / (e - s), c }'
