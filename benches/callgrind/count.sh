#!/usr/bin/env bash
# Instructions a `herald serve` binary executes per published event, counted
# by Valgrind's callgrind (deterministic, unlike wall-clock time on a shared
# machine): the difference between a run of SMALL and a run of LARGE events,
# divided by LARGE - SMALL, so start-up and shut-down cancel out.
#
#   benches/callgrind/count.sh HERALD_BINARY [SUBSCRIBERS] [SMALL] [LARGE] [CONNS:SUBS:PATTERNS]
#
# One worker, durability "never"; WebSocket publisher pipelining `publish`
# ops, SUBSCRIBERS (default 0) WebSocket subscribers of the topic; with the
# last argument, also CONNS idle connections of SUBS subscriptions of
# PATTERNS wildcard patterns each that match nothing published (see
# ws_load.py). HERALD_LOAD_BATCH=N publishes batches of N events per op and
# delivers batches of up to N (see ws_load.py). Needs valgrind, curl and
# python3.
set -euo pipefail
bin=$(realpath "$1"); subs=${2:-0}; small=${3:-2000}; large=${4:-12000}; hostile=${5:-0:0:0}
here=$(cd "$(dirname "$0")" && pwd)
total() {
    local events=$1 dir port pid
    dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
    printf 'durability = "never"\nworkers = 1\n' > "$dir/herald.toml"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve \
        --listen "127.0.0.1:$port" --data "$dir/data" --config "$dir/herald.toml" \
        >/dev/null 2>"$dir/valgrind.log" &
    pid=$!
    for _ in $(seq 150); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
    python3 "$here/ws_load.py" 127.0.0.1 "$port" "$events" "$subs" "$hostile"
    kill -TERM "$pid"; wait "$pid" || true
    awk '/^totals:/ {print $2}' "$dir/cg.out"
    rm -rf "$dir"
}
a=$(total "$small"); b=$(total "$large")
echo "$bin: $(( (b - a) / (large - small) )) instructions per event ($subs subscribers, $hostile hostile; totals $a at $small events, $b at $large)"
