#!/usr/bin/env bash
# Instructions per push, counted by callgrind: close to the same on a busy machine as on an
# idle one, so two builds can be compared when a wall-clock load test would be noise. Not
# exactly: the server's background threads (the log writer, timers) run by the clock, and a
# run that is slower counts more of their work, a few thousand instructions a push.
#
# Runs each binary under `valgrind --tool=callgrind` on the shipped rules (and on a file of
# 10,000 generated rules), posts FEW and then MANY signed pushes over one keep-alive
# connection, and reports (Ir(MANY) - Ir(FEW)) / (MANY - FEW): the instructions of one push,
# start-up and shutdown cancelled out. Workloads: `plain` (a text push answered by a keyword
# rule and a template), `safe` (the same in safe mode), `10000` (a keyword near the end of
# 10,000 rules), `unsigned` (a push refused for its signature), `redis` (`plain` with
# `--store redis://…`, a redis-server of the script's own on a free loopback port, emptied
# before each run: the server's instructions only, not redis-server's), `redis-keeps`
# (`redis` with a first rule that calls a service, which the pushes do not match: an
# account whose rules may keep an answer for a user, so that each text asks for one).
#
#   benches/instructions.sh                                    # this build
#   BEFORE=/path/to/older/wxrules benches/instructions.sh       # and an older one, beside it
#
# Variables: FEW (200), MANY (2200), WORKLOADS (plain safe 10000 unsigned redis; also
# redis-keeps), WXRULES (a built binary to measure instead of building this one).
# Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

FEW=${FEW:-200}
MANY=${MANY:-2200}
WORKLOADS=${WORKLOADS:-"plain safe 10000 unsigned redis"}
BEFORE=${BEFORE:-}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ -n "${WXRULES:-}" ] || cargo build --release --quiet --bin wxrules
current=${WXRULES:-target/release/wxrules}

work=$(mktemp -d "${TMPDIR:-/tmp}/wxrules-instr.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r rules/rules.yaml templates "$work/"
redis_url=""
if [[ " $WORKLOADS " == *" redis"* ]]; then
    command -v redis-server >/dev/null || { echo "the redis workload needs redis-server" >&2; exit 2; }
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
    redis_pid=$!
    trap 'kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
    until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
    redis_url="redis://127.0.0.1:$redis_port"
fi
mkdir -p "$work/keeps" "$work/big/templates"
cp -r templates "$work/keeps/"
{
    echo "rules:"
    echo "  - name: bench-call"
    echo "    when: { keyword: { regex: '^查单(?P<order>\d+)\$' } }"
    echo "    call: { url: \"http://127.0.0.1:9/orders/{{captures.order}}\" }"
    echo "    reply: { text: \"订单 {{captures.order}}：{{call.status}}\" }"
    echo "    on_error: { text: 查询暂时不可用 }"
    sed 1,/^rules:/d rules/rules.yaml
} >"$work/keeps/rules.yaml"
awk 'BEGIN { print "rules:"; for (i = 0; i < 10000; i++) printf "  - { name: kw%d, when: { keyword: kw%d }, reply: { text: \"reply %d to {{FromUserName}}\" } }\n", i, i, i }' \
    >"$work/big/rules.yaml"

# pushes N WORKLOAD PORT: N pushes over one connection, each with its own MsgId and nonce.
pushes() {
    python3 - "$@" <<'PY'
import hashlib, http.client, subprocess, sys
n, workload, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
token, ts = "bench-token", "1795737600"

def query(nonce):
    # Each push its own nonce and signature, as WeChat sends them: a signed query seen
    # before with another body is a replay, refused.
    if workload == "unsigned":
        return f"/wechat?signature={'0' * 40}&timestamp={ts}&nonce={nonce}"
    sig = hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest()
    return f"/wechat?signature={sig}&timestamp={ts}&nonce={nonce}&openid=oBenchUser"
content = "kw9990" if workload == "10000" else "price"
safe = []
if workload == "safe":
    # Encrypted as WeChat does, by benches/wrk/make_safe.py, each with its own MsgId.
    import tempfile
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        subprocess.run([sys.executable, "benches/wrk/make_safe.py", "--token", token,
                        "--aes-key", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                        "--app-id", "wx2c2769f8efd9abc2", "--count", str(n), "--out", f.name],
                       check=True)
        safe = [line.rstrip("\n").split("\t", 1) for line in f]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    xml = ("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBenchUser]]>"
           "</FromUserName><CreateTime>1795737600</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           f"<Content><![CDATA[{content}]]></Content><MsgId>{1000000 + i}</MsgId></xml>")
    headers = {"Content-Type": "text/xml"}
    path = query(str(1000000 + i))
    if workload == "safe":
        path, xml = safe[i]
    conn.request("POST", path, body=xml.encode(), headers=headers)
    answer = conn.getresponse().read()
    if workload != "unsigned" and b"<xml>" not in answer and b"Encrypt" not in answer:
        sys.exit(f"unexpected answer: {answer[:200]!r}")
PY
}

# instructions BINARY WORKLOAD N: total Ir of one run of N pushes.
instructions() {
    local binary=$1 workload=$2 n=$3 dir="$work" env=(WXRULES_TOKEN=bench-token WXRULES_LOG=warn,wxrules::cli=info)
    local store=()
    [ "$workload" != 10000 ] || dir="$work/big"
    [ "$workload" != redis-keeps ] || dir="$work/keeps"
    if [ "$workload" = redis ] || [ "$workload" = redis-keeps ]; then
        # A run's MsgIds are the next run's too: none may be found answered.
        redis-cli -u "$redis_url" flushall >/dev/null
        store=(--store "$redis_url")
        workload=plain
    fi
    [ "$workload" != safe ] || env+=(WXRULES_APPID=wx2c2769f8efd9abc2 WXRULES_AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG)
    local out="$work/callgrind.out" log="$work/server.log"
    env "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$binary" serve --rules "$dir/rules.yaml" --templates "$dir/templates" \
        --listen 127.0.0.1:0 --max-age 0 --workers 1 --log-format json "${store[@]}" 2>"$log" &
    local pid=$! port=""
    for _ in $(seq 600); do
        port=$(grep -oE '"listen":"127\.0\.0\.1:[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
        [ -z "$port" ] || break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "no server_started from $binary" >&2; cat "$log" >&2; exit 1; }
    pushes "$n" "$workload" "$port"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    # Read to the end: awk leaving early would fail the pipe (pipefail).
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ { gsub(",", "", $1); print $1 }'
}

printf '| workload | build | Ir per push |\n| --- | --- | ---: |\n'
for w in $WORKLOADS; do
    for build in current before; do
        binary=$current
        if [ "$build" = before ]; then
            [ -n "$BEFORE" ] || continue
            binary=$BEFORE
        fi
        few=$(instructions "$binary" "$w" "$FEW")
        many=$(instructions "$binary" "$w" "$MANY")
        printf '| %s | %s | %d |\n' "$w" "$build" $(((many - few) / (MANY - FEW)))
    done
done
