#!/usr/bin/env bash
# `make demo`: the forum of the original example, running on berth.
#
# Starts `berth server` in the background with two test hosts in zones a and b, builds the
# forum's images (users, topics, messages and their datastore: static binaries, FROM
# scratch) and deploys them through the public APIs with boto3 (examples/forum/deploy.py):
# ECR repositories, Cloud Map namespace forum.local, ECS task definitions and services
# spread over the zones, an Application Load Balancer on 127.0.0.1:8080 with path rules.
# It waits until every target is healthy, checks the forum end to end, prints how to use
# it and exits, leaving it running. `make down` stops and removes all of it.
#
# Settings (environment; the defaults are berth's own, so plain `berth ...` commands work):
#   BERTH_DEMO_DATA  data directory            (/var/lib/berth)
#   BERTH_DEMO_PORT  API and registry port      (5000)
#   BERTH_DEMO_LB_PORT  the forum's port        (8080)
#   BERTH_DEMO_DNS_PORT  Cloud Map DNS port     (8053)
#   BERTH_DEMO_BRIDGE, BERTH_DEMO_SUBNET, BERTH_DEMO_METADATA_PORT: the server's own node
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BERTH="${BERTH_BIN:-$ROOT/target/debug/berth}"
DATA="${BERTH_DEMO_DATA:-/var/lib/berth}"
PORT="${BERTH_DEMO_PORT:-5000}"
LB_PORT="${BERTH_DEMO_LB_PORT:-8080}"
DNS_PORT="${BERTH_DEMO_DNS_PORT:-8053}"
BRIDGE="${BERTH_DEMO_BRIDGE:-berth0}"
SUBNET="${BERTH_DEMO_SUBNET:-10.213.0.0/24}"
METADATA_PORT="${BERTH_DEMO_METADATA_PORT:-51679}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/x86_64-unknown-linux-gnu/release"
MARK="$DATA/.berth-demo"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "make demo: $*" >&2; exit 1; }

if [ -f "$MARK" ] && [ -f "$DATA/demo.pid" ] && kill -0 "$(cat "$DATA/demo.pid")" 2>/dev/null; then
  die "the demo is already running (server pid $(cat "$DATA/demo.pid")); \`make down\` stops it"
fi
if [ -d "$DATA" ] && [ ! -f "$MARK" ] && [ -n "$(ls -A "$DATA" 2>/dev/null)" ]; then
  die "$DATA holds another berth server's state; set BERTH_DEMO_DATA to another directory"
fi
if curl -s -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; then
  die "something already listens on 127.0.0.1:$PORT; stop it or set BERTH_DEMO_PORT"
fi

step "building the forum's programs (static: they are the whole image)"
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols -C debuginfo=0" \
  cargo build --quiet --release -p forum --target x86_64-unknown-linux-gnu
T0=$(date +%s.%N)

step "starting berth server: API and registry on 127.0.0.1:$PORT, two test hosts in zones a and b"
mkdir -p "$DATA"
touch "$MARK"
# Its own session: it outlives this script; `make down` stops it by the pid written here.
setsid "$BERTH" server --data-dir "$DATA" --listen "127.0.0.1:$PORT" --log-level warn \
  --hosts 2 --zones a,b --dns "127.0.0.1:$DNS_PORT" --lb-address 127.0.0.1 \
  --bridge "$BRIDGE" --task-subnet "$SUBNET" --metadata-port "$METADATA_PORT" \
  </dev/null >"$DATA/server.log" 2>&1 &
echo $! > "$DATA/demo.pid"
for _ in $(seq 1 400); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/" || true)
  [ "$code" = 401 ] && break
  kill -0 "$(cat "$DATA/demo.pid")" 2>/dev/null || { tail -20 "$DATA/server.log" >&2; die "berth server exited (log: $DATA/server.log)"; }
  sleep 0.05
done
[ "$code" = 401 ] || die "berth server did not answer on 127.0.0.1:$PORT (log: $DATA/server.log)"
# The hosts join within a second or two; the deployment waits for its tasks anyway.
for _ in $(seq 1 200); do
  n=$("$BERTH" instances --endpoint-url "http://127.0.0.1:$PORT" --data-dir "$DATA" 2>/dev/null | grep -c ACTIVE || true)
  [ "$n" -ge 2 ] && break
  sleep 0.1
done
[ "$n" -ge 2 ] || die "the test hosts did not join (log: $DATA/server.log)"

step "deploying the forum with boto3 (ECR, Cloud Map, ECS, ELBv2)"
"$VENV/bin/python" "$ROOT/examples/forum/deploy.py" --endpoint "http://127.0.0.1:$PORT" --data-dir "$DATA" \
  --berth "$BERTH" --bin-dir "$BIN_DIR" --lb-port "$LB_PORT"
T1=$(date +%s.%N)
UP=$(python3 -c "print(f'{$T1 - $T0:.1f}')")
echo "$UP" > "$DATA/demo.seconds"

FLAGS=""
if [ "$DATA" != /var/lib/berth ] || [ "$PORT" != 5000 ]; then
  FLAGS=" --endpoint-url http://127.0.0.1:$PORT --data-dir $DATA"
fi
cat <<EOF

$(printf '\033[1m')The forum is up on http://127.0.0.1:$LB_PORT ($UP s from starting the server to every target healthy).$(printf '\033[0m')

Try it:
  curl -s -XPOST localhost:$LB_PORT/users -d '{"name": "grace"}'
  curl -s -XPOST localhost:$LB_PORT/topics -d '{"title": "containers"}'
  curl -s -XPOST localhost:$LB_PORT/messages -d '{"user_id": 2, "topic_id": 2, "text": "hi"}'
  curl -s 'localhost:$LB_PORT/messages?topic_id=2'
  curl -s localhost:$LB_PORT/users/99           # 404: no such user

Look around:
  berth service ls$FLAGS
  berth service ps users$FLAGS
  berth instances$FLAGS
  berth lb targets forum$FLAGS
  berth logs TASK_ID$FLAGS
  dig +short -p $DNS_PORT @127.0.0.1 users.forum.local
  $VENV/bin/aws --endpoint-url http://127.0.0.1:$PORT ecs list-services   (credentials: $DATA/credentials)

The story (README tells it):
  berth service update topics --image 127.0.0.1:$PORT/forum/topics:v2$FLAGS   # a rolling deployment
  berth service ps users$FLAGS; berth stop TASK_ID$FLAGS     # the load balancer keeps answering
  berth service scale messages 4$FLAGS

\`make down\` stops everything the demo started.
EOF
