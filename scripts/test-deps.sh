#!/usr/bin/env bash
# Installs what the integration suite (tests/) needs on a fresh Debian 12, as root:
# Debian's docker.io, skopeo, busybox-static, curl, dnsutils (dig) and etcd-server (the tests start
# private etcd processes on their own ports; the package's systemd unit, where it runs,
# is never used), and a Python venv with the real aws CLI, boto3, pytest and
# requests. Idempotent: installs only what is missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo_root/.venv}"

apt_packages=(docker.io skopeo busybox-static curl ca-certificates python3-venv runc iproute2 etcd-server dnsutils)
missing=()
for pkg in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "test-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's python3 (not whatever python3 is first on PATH) has the venv module installed above.
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3)"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "test-deps: creating venv $venv" >&2
    "$python" -m venv "$venv"
fi
req="$repo_root/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
fi
echo "test-deps: ok (venv $venv)" >&2
