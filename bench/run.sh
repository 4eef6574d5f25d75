#!/usr/bin/env bash
# `make bench`: berth's registry against Debian's docker-registry (CNCF distribution)
# in the same run, on loopback. Writes bench/out/report.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BERTH_BIN="${BERTH_BIN:-$ROOT/target/release/berth}"
if ! command -v docker-registry >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
fi
# The package may start its own service; we never use it (our instance has its own port).
mkdir -p "$ROOT/bench/out"
"$VENV/bin/python" "$ROOT/bench/bench.py" --berth "$BERTH_BIN" --peer "$(command -v docker-registry)" \
  --out "$ROOT/bench/out/report.md"
