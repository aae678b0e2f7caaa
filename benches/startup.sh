#!/usr/bin/env bash
# Start-up at scale: launch to `/healthz` and the peak RSS then (VmHWM), for a file of N
# generated rules (load.sh's `rules_file`: 80% exact keywords, 8% `contains`, 1% regexes
# with a capture, 6% menu clicks, 5% QR scenes), RUNS times; with BEFORE, an older build's
# runs in turn with this one's, so that a drift of the machine's speed reaches both.
#
#   benches/startup.sh                                   # this build, 100,000 rules, 5 runs
#   BEFORE=/path/to/older/wxrules RUNS=8 benches/startup.sh
#
# Variables: N (100000), RUNS (5), WXRULES (a built binary instead of building this one),
# BEFORE. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
RUNS=${RUNS:-5}
BEFORE=${BEFORE:-}
[ -n "${WXRULES:-}" ] || cargo build --release --quiet --bin wxrules
current=${WXRULES:-target/release/wxrules}

work=$(mktemp -d "${TMPDIR:-/tmp}/wxrules-startup.XXXXXX")
trap 'rm -rf "$work"' EXIT
# load.sh's generator, read from it so that both measure the same file.
eval "$(sed -n '/^rules_file() {/,/^}/p' benches/load.sh)"
dir=$(rules_file "$N")

# once BINARY: one launch; prints `ready_ms=… peak_kib=…`.
once() {
    local log="$work/server.log" t0 port="" pid
    t0=$(date +%s%N)
    WXRULES_TOKEN=bench-token "$1" serve --rules "$dir/rules.yaml" --templates "$dir/templates" \
        --listen 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    while [ -z "$port" ]; do
        kill -0 "$pid" 2>/dev/null || { echo "exited at start-up:" >&2; tail -20 "$log" >&2; exit 1; }
        port=$(grep -oE '(listen=|listening on )127\.0\.0\.1:[0-9]+' "$log" | head -1 | grep -oE '[0-9]+$' || true)
        [ -n "$port" ] || sleep 0.005
    done
    until curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.005; done
    local ready_ms=$((($(date +%s%N) - t0) / 1000000))
    echo "ready_ms=$ready_ms peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "$N rules ($(du -h "$dir/rules.yaml" | cut -f1)); $(nproc) cores"
for run in $(seq "$RUNS"); do
    echo "run $run: after  $(once "$current")"
    [ -z "$BEFORE" ] || echo "run $run: before $(once "$BEFORE")"
done
