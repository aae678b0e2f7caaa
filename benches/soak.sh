#!/usr/bin/env bash
# A bounded soak of wxrules on loopback: builds the release binary, serves a copy of the
# shipped rules on 127.0.0.1:<free port>, drives DURATION seconds of mixed traffic with
# benches/soak.py (valid pushes with fresh MsgIds, wrong signatures, malformed XML, bodies
# over 64 KiB, safe-mode garbage, /healthz and /metrics), sends SIGHUP every HUP_EVERY
# seconds (alternating a broken and a good rules file), samples the server's RSS every
# RSS_EVERY seconds, then checks: no 5xx, no panic in the log, the process alive, RSS flat.
#
#   benches/soak.sh                         # 10 minutes
#   DURATION=60 WORKERS=2 benches/soak.sh   # a quick one
#
# Not part of CI. Exits 0 when every check passes, 1 otherwise. Traffic goes to
# 127.0.0.1 only and stops at the deadline; the server is stopped with SIGTERM at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
WORKERS=${WORKERS:-4}
HUP_EVERY=${HUP_EVERY:-30}
RSS_EVERY=${RSS_EVERY:-10}
# RSS may grow by this much (KiB) from the first sample after warm-up to the last.
RSS_SLACK_KIB=${RSS_SLACK_KIB:-8192}
WARMUP=${WARMUP:-60}

cargo build --release --locked --quiet
bin=target/release/wxrules

work=$(mktemp -d "${TMPDIR:-/tmp}/wxrules-soak.XXXXXX")
cp -r rules templates "$work/"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$work/server.log"

export WXRULES_TOKEN=soak-token
export WXRULES_APPID=wx2c2769f8efd9abc2
export WXRULES_AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
# Refusals log at warn and every answer at info: at thousands of requests a second that
# is gigabytes. Errors (and panics, which bypass the log filter) are what the soak checks.
export WXRULES_LOG=${WXRULES_LOG:-error}

"$bin" serve --rules "$work/rules/rules.yaml" --templates "$work/templates" \
  --listen "127.0.0.1:$port" 2>"$log" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap stop EXIT

for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "soak: pid $pid on 127.0.0.1:$port for ${DURATION}s, $WORKERS driver processes, $(nproc) cores"
echo "      $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB"
python3 benches/soak.py --pid "$pid" --port "$port" --duration "$DURATION" --workers "$WORKERS" \
  --hup-every "$HUP_EVERY" --rss-every "$RSS_EVERY" --rules-dir "$work/rules" \
  --fixtures tests/data/messages --report "$work/report.json"

alive=yes
kill -0 "$pid" 2>/dev/null || alive=no
health=$(curl -fsS "http://127.0.0.1:$port/healthz" || echo '{}')
panics=$(grep -c 'panicked' "$log" || true)

python3 - "$work/report.json" "$alive" "$panics" "$RSS_SLACK_KIB" "$WARMUP" "$health" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
alive, panics, slack, warmup = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
health = json.loads(sys.argv[6] or "{}")
rss = report["rss_kib"]
values = [kib for _, kib in rss]
after = [kib for t, kib in rss if t >= warmup] or values
first, last, peak = after[0], values[-1], max(values)
flat = last - first <= slack
print()
print(f"{'kind':<14} {'requests':>10}  statuses")
for kind, by in report["by_kind"].items():
    print(f"{kind:<14} {sum(by.values()):>10}  " + ", ".join(f"{s}: {n}" for s, n in sorted(by.items())))
print()
lat = report["valid_latency_us"]
rows = [
    ("duration", f"{report['seconds']} s"),
    ("requests", f"{report['requests']} ({report['rps']}/s)"),
    ("valid push latency", f"p50 {lat['p50']} µs, p99 {lat['p99']} µs, max {lat['max']} µs (client side)"),
    ("SIGHUP reloads", f"{report['hups']} sent; healthz: {health.get('reloads_applied', '?')} applied, {health.get('reloads_rejected', '?')} rejected"),
    ("5xx", report["five_xx"]),
    ("unexpected status", report["unexpected_status"]),
    ("connection errors", report["connection_errors"]),
    ("panics in log", panics),
    ("process alive", alive),
    ("RSS (KiB)", f"start {values[0]}, after {warmup:.0f} s warm-up {first}, last {last}, max {peak}"),
    ("RSS flat", f"{'yes' if flat else 'NO'} (last - after warm-up = {last - first} KiB, slack {slack})"),
]
for name, value in rows:
    print(f"{name:<20} {value}")
for line in report["unexpected_samples"]:
    print("  unexpected:", line)
ok = report["five_xx"] == 0 and report["unexpected_status"] == 0 and panics == 0 and alive == "yes" and flat
print("\nsoak:", "PASS" if ok else "FAIL", f"(report: {sys.argv[1]})")
sys.exit(0 if ok else 1)
EOF
