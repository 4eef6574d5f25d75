#!/usr/bin/env bash
# `make down`: stops what `make demo` started and removes what it made — the server
# (which stops its test hosts, their agents and tasks, and removes their namespaces and
# bridges), then `berth down` for anything a killed server left (containers, mounts,
# namespaces, the node bridge), then the demo's data directory. Harmless to run twice.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BERTH="${BERTH_BIN:-$ROOT/target/debug/berth}"
DATA="${BERTH_DEMO_DATA:-/var/lib/berth}"

if [ ! -f "$DATA/.berth-demo" ]; then
  echo "make down: no demo in $DATA (nothing to do)"
  exit 0
fi
if [ -f "$DATA/demo.pid" ]; then
  pid=$(cat "$DATA/demo.pid")
  if kill -0 "$pid" 2>/dev/null; then
    echo "stopping berth server (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "berth server did not stop in 30 s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    fi
  fi
fi
if [ -x "$BERTH" ]; then
  "$BERTH" down --data-dir "$DATA" >/dev/null 2>&1 || true
fi
rm -rf "$DATA"
echo "the demo is down: server stopped, hosts and containers removed, $DATA deleted"
