#!/usr/bin/env bash
# `make demo`: what berth does today, end to end, with real clients.
# Until the forum example lands (see the issues), the demo is the seed's first step:
# create an ECR repository with the aws CLI, build an image, log in, push, list, pull.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BERTH="${BERTH_BIN:-$ROOT/target/debug/berth}"
WORK="$(mktemp -d /tmp/berth-demo.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  # Stop the demo's containers and remove its bridge, namespaces and mounts.
  "$BERTH" down --data-dir "$WORK/data" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting berth server on 127.0.0.1:$PORT (data in $WORK/data)"
# A bridge and subnet of the demo's own, so it never meets another berth on this machine.
BRIDGE="bdemo$((RANDOM % 10000))"
SUBNET="10.$((100 + RANDOM % 100)).$((RANDOM % 256)).0/24"
"$BERTH" server --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --log-level warn \
  --bridge "$BRIDGE" --task-subnet "$SUBNET" --metadata-port "$((52000 + RANDOM % 1000))" &
SERVER_PID=$!
for _ in $(seq 1 200); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/" || true)
  [ "$code" = 401 ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "berth server exited" >&2; exit 1; }
  sleep 0.05
done

export AWS_SHARED_CREDENTIALS_FILE="$WORK/data/credentials" AWS_DEFAULT_REGION=us-east-1
AWS=("$VENV/bin/aws" --endpoint-url "http://127.0.0.1:$PORT")
REG="127.0.0.1:$PORT"

step "aws ecr create-repository --repository-name hello-world"
"${AWS[@]}" ecr create-repository --repository-name hello-world --output table

step "berth build -t hello-world:latest (FROM scratch + busybox)"
mkdir -p "$WORK/ctx"
cp /bin/busybox "$WORK/ctx/busybox"
cat > "$WORK/ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
ENV GREETING="hello from berth"
CMD ["/bin/busybox", "sh", "-c", "echo $GREETING"]
DOCKERFILE
"$BERTH" build --endpoint-url "http://$REG" --data-dir "$WORK/data" -t hello-world:latest "$WORK/ctx"

step "aws ecr get-login-password (docker, skopeo and podman log in with it as user AWS)"
PASSWORD="$("${AWS[@]}" ecr get-login-password)"
echo "password of ${#PASSWORD} characters, valid 12 hours"

step "berth images"
"$BERTH" images --endpoint-url "http://$REG" --data-dir "$WORK/data"

step "aws ecr describe-images --repository-name hello-world"
"${AWS[@]}" ecr describe-images --repository-name hello-world --output table

step "berth pull hello-world:latest -o $WORK/pulled"
"$BERTH" pull --endpoint-url "http://$REG" --data-dir "$WORK/data" hello-world:latest -o "$WORK/pulled"
ls "$WORK/pulled"

step "berth run hello-world:latest (an ECS task on FARGATE: a real container under runc)"
"$BERTH" run --endpoint-url "http://$REG" --data-dir "$WORK/data" --memory 64 hello-world:latest

step "berth run -e GREETING=... hello-world:latest sh -c 'echo \$GREETING from \$(hostname); exit 3'"
set +e
"$BERTH" run --endpoint-url "http://$REG" --data-dir "$WORK/data" -e GREETING="hi there" \
  hello-world:latest /bin/busybox sh -c 'echo $GREETING from $(/bin/busybox hostname); exit 3'
echo "exit code: $?"
set -e

step "berth ps -a"
"$BERTH" ps --endpoint-url "http://$REG" --data-dir "$WORK/data" -a

cat <<'NEXT'

That was the registry (ECR's API and an OCI registry on one port) and ECS tasks run as
real containers. The demo grows with the project: next, ECS services on a cluster of
hosts, then the forum example — users, topics and messages services behind an
Application Load Balancer — comes up with this same command.
NEXT
