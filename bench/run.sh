#!/usr/bin/env bash
# `make bench`: berth against its peers in the same run, on this machine.
#  - the registry against Debian's docker-registry (CNCF distribution) → bench/out/report.md
#  - container start (`berth run`) against bare runc, docker and podman → bench/out/runtime.md
#  - a service of 50 tasks (CreateService → all RUNNING) against Docker Swarm → bench/out/services.md
#  - task placement on 10,000 simulated instances, batched and one task per call → bench/out/scheduler.txt
#  - the ALB listener against haproxy and nginx as a proxy, one thread each → bench/out/lb.md
#  - Cloud Map DNS against dnsmasq serving the same records → bench/out/dns.md
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BERTH_BIN="${BERTH_BIN:-$ROOT/target/release/berth}"
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v podman >/dev/null || need+=(podman)
command -v dockerd >/dev/null || need+=(docker.io)
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v dnsmasq >/dev/null || need+=(dnsmasq)
command -v dig >/dev/null || need+=(dnsutils)
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The packages may start their own services; we never use them (our instances have
# their own ports, sockets and directories).
mkdir -p "$ROOT/bench/out"
"$VENV/bin/python" "$ROOT/bench/bench.py" --berth "$BERTH_BIN" --peer "$(command -v docker-registry)" \
  --out "$ROOT/bench/out/report.md"
"$VENV/bin/python" "$ROOT/bench/runtime.py" --berth "$BERTH_BIN" --venv "$VENV" \
  --out "$ROOT/bench/out/runtime.md"
"$VENV/bin/python" "$ROOT/bench/services.py" --berth "$BERTH_BIN" --out "$ROOT/bench/out/services.md"
cargo build -q --release --manifest-path "$ROOT/Cargo.toml" -p berth-scheduler --example simulate
SIM="$(cargo metadata -q --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
  "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/simulate"
{
  echo "## 100 tasks per place call (batch)"
  "$SIM"
  echo
  echo "## 1 task per place call (100,000 calls)"
  "$SIM" --per-call 1
} | tee "$ROOT/bench/out/scheduler.txt"
"$VENV/bin/python" "$ROOT/bench/lb.py" --berth "$BERTH_BIN" --out "$ROOT/bench/out/lb.md"
"$VENV/bin/python" "$ROOT/bench/dns.py" --berth "$BERTH_BIN" --out "$ROOT/bench/out/dns.md"
