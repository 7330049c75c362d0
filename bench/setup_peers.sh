#!/usr/bin/env bash
# Install the benchmark peers into their own virtualenvs (bench/.venvs/<group>)
# and BullMQ for Node.js into bench/node/node_modules. Idempotent: a venv is
# (re)installed only when its requirements file changed since the last run.
#
#   bash bench/setup_peers.sh            # all groups + node
#   bash bench/setup_peers.sh redis8     # one group only
#
# Groups are split by redis-py requirement (see bench/peers-requirements/):
#   redis5: arq (redis<6)      redis7: saq (redis<8)
#   redis8: rq, dramatiq, celery, taskiq + taskiq-redis (redis>=8), streaq, huey, bullmq
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then
    groups=()
    for f in peers-requirements/*.txt; do groups+=("$(basename "$f" .txt)"); done
    groups+=(node)
fi

for g in "${groups[@]}"; do
    if [ "$g" = node ]; then
        if ! command -v npm >/dev/null; then echo "setup_peers: npm not found, skipping BullMQ/Node" >&2; continue; fi
        stamp=node/node_modules/.bench-stamp
        want="$(cat node/package.json node/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then echo "node: up to date"; continue; fi
        echo "node: installing"
        if [ -f node/package-lock.json ]; then (cd node && npm ci --no-audit --no-fund --loglevel=error)
        else (cd node && npm install --no-audit --no-fund --loglevel=error); fi
        want="$(cat node/package.json node/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)"
        echo "$want" > "$stamp"
        continue
    fi
    req="peers-requirements/$g.txt"
    [ -f "$req" ] || { echo "setup_peers: no such group: $g" >&2; exit 2; }
    venv=".venvs/$g"
    stamp="$venv/.bench-stamp"
    want="$(sha256sum "$req" | cut -c1-16)"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$g: up to date"; continue
    fi
    echo "$g: installing $req"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
done
