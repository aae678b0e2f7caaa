#!/usr/bin/env bash
# Load test of wxrules against a bare actix-web baseline, side by side on loopback.
#
# Builds the release binaries (wxrules and src/bin/baseline.rs), generates rule files of
# 10,000 and 100,000 rules, then serves and drives, one server at a time, with the same wrk
# settings for a bounded DURATION each:
#
#   baseline     target/release/baseline: reads the body, answers a fixed reply XML
#   shipped      rules/rules.yaml, signed plaintext text `price` (an exact keyword + template)
#   nolog        the same with WXRULES_LOG=warn (no per-request `message_handled` line)
#   dashboard    the same with --admin-listen: the dashboard's ring of recent pushes on
#   10000        10,000 generated rules, plaintext, an exact keyword near the end of the file
#   100000       100,000 generated rules, the same
#   safe         rules/rules.yaml, safe mode (encrypted request, encrypted reply)
#   redis        the same as shipped with --store redis://… (a redis-server of the script's
#                own on a free loopback port, emptied before each run): dedup, the replay
#                check and cooldowns in Redis, as every multi-instance deployment runs
#   redis-safe   safe mode with --store redis://…
#   retry        rules/rules.yaml, the same MsgId every time: answers from the dedup store
#   service      the account's service alone (baseline's `/service/…`, a fixed JSON answer),
#                driven directly with the JSON body a `call` sends: the bar for `call`
#   call         rules/rules.yaml plus a first rule whose `call` asks that service (on
#                loopback, answering at once) and renders `{{call.status}}`
#   baseline     again at the end, to show the drift; ratios use the mean of both runs
#
# Every request but the `retry` ones carries a fresh MsgId and nonce (benches/wrk/plain.lua counts;
# safe-mode requests are precomputed by benches/wrk/make_safe.py, enough for no repeats).
# For each wxrules instance it also reports the start-up time (launch to /healthz
# answering), the time of a SIGHUP reload (signal to `rules_reloaded` in the log), and
# memory: VmRSS at /healthz, again SETTLE (2) s later once jemalloc has handed back what
# loading freed, the peak (VmHWM) by then, after the run, and SETTLE s after the reload;
# retries seen come from /metrics. A second table gives each server's CPU time per request
# over the run (user and system, from /proc/PID/stat).
#
#   benches/load.sh                          # 10 runs of 15 s
#   DURATION=5 WORKLOADS="shipped safe" benches/load.sh
#   BEFORE=/path/to/older/wxrules benches/load.sh   # each workload also on an older build
#   WXRULES=/path/to/wxrules ...                     # serve that binary instead of this build
#
# With BEFORE, every workload runs on this build and then on BEFORE's (rows `NAME` and
# `NAME-before`), back to back, so that a change is measured against the build before it
# in the same run.
#
# Variables: DURATION (s, 15), WORKERS (server worker threads, 1: wrk needs the other core
# of a 2-core machine), THREADS (wrk threads, 1), CONNECTIONS (32), WORKLOADS (the list
# above, without the baselines), WXRULES_LOG (info, as shipped), SAFE_REQUESTS (auto:
# 1.25 x what the `shipped` run did in DURATION), KEEP=1 keeps the scratch directory.
# Not part of CI. Loopback only; every server started here is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
WORKLOADS=${WORKLOADS:-"shipped nolog dashboard 10000 100000 safe retry service call redis redis-safe"}
SERVER_LOG=${WXRULES_LOG:-info}
SAFE_REQUESTS=${SAFE_REQUESTS:-auto}
KEEP=${KEEP:-0}

TOKEN=bench-token
APP_ID=wx2c2769f8efd9abc2
AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
TIMESTAMP=1795737600

if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y wrk >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; }
fi
cargo build --release --bins --quiet
wxrules=${WXRULES:-target/release/wxrules}
current=$wxrules
BEFORE=${BEFORE:-}
baseline=target/release/baseline

work=$(mktemp -d "${TMPDIR:-/tmp}/wxrules-load.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
peak_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# CPU time a process has used, user and system, in clock ticks.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
# jemalloc hands freed pages back within about a second (.cargo/config.toml).
SETTLE=2

# Plaintext requests are signed by benches/wrk/plain.lua, each with its own nonce (the
# server refuses a signed query seen before with another body: a replay).
export WRK_TOKEN="$TOKEN" WRK_TIMESTAMP="$TIMESTAMP"
plain_path="/wechat"

# rules_file N: N generated rules plus a catch-all, shaped like a big account's: 80% exact
# keywords with an inline template, 8% `contains`, 1% regex with a capture, 6% menu CLICK
# keys (news replies), 5% QR scenes.
rules_file() {
    local n=$1 dir="$work/rules-$1"
    mkdir -p "$dir/templates"
    awk -v n="$n" 'BEGIN {
        print "rules:"
        for (i = 0; i < n; i++) {
            k = i % 100
            if (k < 80)
                printf "  - { name: kw%d, when: { keyword: [kw%d, 关键词%d] }, reply: { text: \"reply %d to {{FromUserName}}\" } }\n", i, i, i, i
            else if (k < 88)
                printf "  - { name: part%d, when: { keyword: { contains: [part%dx, 优惠%d号] } }, reply: { text: \"partial %d\" } }\n", i, i, i, i
            else if (k < 89)
                printf "  - { name: re%d, when: { keyword: { regex: \"^re%d-(?P<n>\\\\d+)$\" } }, reply: { text: \"regex %d: {{captures.n}}\" } }\n", i, i, i
            else if (k < 95)
                printf "  - { name: menu%d, when: { event: CLICK, event_key: KEY_%d }, reply: { news: [ { title: \"菜单 %d\", description: \"工作日 9:00-18:00\", url: \"https://example.com/%d\", pic_url: \"https://example.com/%d.jpg\" } ] } }\n", i, i, i, i, i
            else
                printf "  - { name: scene%d, when: { event: subscribe, event_key: qrscene_%d }, reply: { text: \"欢迎 {{FromUserName}}（场景 %d）\" } }\n", i, i, i
        }
        print "  - { name: to-human, when: { msg_type: [text, voice, image] }, reply: { transfer_customer_service: {} } }"
    }' >"$dir/rules.yaml"
    echo "$dir"
}

# The last exact keyword of an N-rule file: the worst case for a linear scan.
last_keyword() { awk -v n="$1" 'BEGIN { for (i = n - 1; i % 100 >= 80; i--); print "kw" i }'; }

# start NAME COMMAND...: launches a server on 127.0.0.1:0 (the command gets --listen),
# waits for its bound address, then for /healthz; sets $pid, $port, $startup_ms, $log.
start() {
    local name=$1
    shift
    log="$work/$name.log"
    local t0
    t0=$(now_ns)
    "$@" --listen 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    port=""
    while [ -z "$port" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited at start-up:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        if [ "$(ms_since "$t0")" -gt 300000 ]; then
            echo "$name did not start in 300 s" >&2
            exit 1
        fi
        port=$(grep -oE '(listen=|listening on )127\.0\.0\.1:[0-9]+' "$log" | head -1 | grep -oE '[0-9]+$' || true)
        [ -n "$port" ] || sleep 0.005
    done
    # With --admin-listen, /healthz and /metrics are on the admin port.
    admin_port=$(grep -oE 'admin_listen="127\.0\.0\.1:[0-9]+' "$log" | head -1 | grep -oE '[0-9]+$' || true)
    until curl -sf -o /dev/null "http://127.0.0.1:${admin_port:-$port}/healthz"; do sleep 0.005; done
    startup_ms=$(ms_since "$t0")
}

stop() {
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# reload: SIGHUP, then the time until the log says `rules_reloaded` (or rejected).
reload() {
    local size t0 said=""
    size=$(stat -c %s "$log")
    t0=$(now_ns)
    kill -HUP "$pid"
    while [ -z "$said" ]; do
        said=$(tail -c +"$((size + 1))" "$log" | grep -oE 'rules_reloaded|rules_reload_rejected' | head -1 || true)
        [ -n "$said" ] || sleep 0.005
        [ "$(ms_since "$t0")" -lt 300000 ] || { echo "no reload in 300 s" >&2; exit 1; }
    done
    reload_ms=$(ms_since "$t0")
    if [ "$said" != rules_reloaded ]; then
        echo "reload rejected:" >&2
        tail -c +"$((size + 1))" "$log" | grep rules_reload_rejected >&2
        exit 1
    fi
}

metric() { # metric OUTCOME: wxrules_requests_total{outcome=OUTCOME}
    curl -sf "http://127.0.0.1:${admin_port:-$port}/metrics" |
        awk -v o="wxrules_requests_total{outcome=\"$1\"}" '$1 == o { printf "%d", $2; found = 1 } END { if (!found) print 0 }'
}

# A human-readable duration from wrk (12.3us, 1.2ms, 1.1s) in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'; }

# drive NAME SCRIPT ARGS...: wrk against $port; sets $rps, $p50, $p99, $requests.
drive() {
    local name=$1 script=$2 out="$work/$1.wrk"
    shift 2
    local before after
    before=$(cpu_ticks "$pid")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$script" \
        "http://127.0.0.1:$port" -- "$@" >"$out"
    after=$(cpu_ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    requests=$(awk '/ requests in / { print $1 }' "$out")
    # The server's CPU per request, in µs: user, then system (the kernel's TCP work).
    cpu=$(echo "$before $after" | awk -v n="$requests" -v hz="$ticks_per_s" \
        '{ printf "%.2f\t%.2f", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n }')
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    local bad errors
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    errors=$(grep -E '^ +Socket errors:' "$out" || true)
    if [ -n "$bad" ] || [ -n "$errors" ]; then
        echo "$name: ${bad:-0} non-2xx responses; ${errors:-no socket errors}" >&2
        cat "$out" >&2
        [ -z "$bad" ] || exit 1
    fi
}

# check EXPECTED PATH BODY: one request by hand; the answer must contain EXPECTED.
checks=0
check() {
    local got path=$2
    # A plaintext path gets a query signed with a nonce of its own, as plain.lua signs.
    if [[ "$path" != *"?"* ]]; then
        checks=$((checks + 1))
        local nonce="check$checks" signature
        signature=$(printf '%s\n' "$TOKEN" "$TIMESTAMP" "$nonce" | LC_ALL=C sort | tr -d '\n' | sha1sum | cut -d' ' -f1)
        path="$path?signature=$signature&timestamp=$TIMESTAMP&nonce=$nonce&openid=oBenchUser"
    fi
    got=$(curl -s -H 'Content-Type: text/xml' --data-binary "$3" "http://127.0.0.1:$port$path")
    if [[ "$got" != *"$1"* ]]; then
        echo "unexpected answer (wanted $1): $got" >&2
        exit 1
    fi
}

plain_body() {
    printf '<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBenchUser]]></FromUserName><CreateTime>%s</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%s</MsgId></xml>' "$TIMESTAMP" "$1" "$2"
}

rows=()
server_args=()
row() { # row WORKLOAD RULES REQUESTS RPS P50 P99 STARTUP RELOAD RSS0 RSS_SETTLED PEAK RSS1 RSS_RELOADED RETRIES; adds $cpu
    rows+=("$(printf '%s\t' "$@")$cpu")
}

run_baseline() {
    start "$1" "$baseline" --workers "$WORKERS"
    check "本周价格" "$plain_path" "$(plain_body price 1)"
    local rss0
    rss0=$(rss_mib "$pid")
    drive "$1" benches/wrk/plain.lua "$plain_path" price 1000000000
    row "$1" - "$requests" "$rps" "$p50" "$p99" "$startup_ms" - "$rss0" - "$(peak_mib "$pid")" "$(rss_mib "$pid")" - -
    stop
}

# run_wxrules NAME RULES_DIR RULE_COUNT EXPECTED SCRIPT ARGS...; the environment of the
# server comes from $server_env.
run_wxrules() {
    local name=$1 dir=$2 count=$3 expected=$4 script=$5
    shift 5
    start "$name" env WXRULES_TOKEN="$TOKEN" WXRULES_LOG="$server_log" "${server_env[@]}" \
        "$wxrules" serve --rules "$dir/rules.yaml" --templates "$dir/templates" \
        --max-age 0 --workers "$WORKERS" "${server_args[@]}"
    local rss0 rss_settled peak
    rss0=$(rss_mib "$pid")
    sleep "$SETTLE"
    rss_settled=$(rss_mib "$pid")
    peak=$(peak_mib "$pid")
    check "$expected" "$check_path" "$check_body"
    drive "$name" "$script" "$@"
    local rss1 rss_reloaded retries replied
    rss1=$(rss_mib "$pid")
    retries=$(metric retry)
    replied=$(metric replied)
    reload
    sleep "$SETTLE"
    rss_reloaded=$(rss_mib "$pid")
    row "$name" "$count" "$requests" "$rps" "$p50" "$p99" "$startup_ms" "$reload_ms" "$rss0" "$rss_settled" "$peak" "$rss1" "$rss_reloaded" "$retries"
    echo "$name: $replied replied, $retries retries, $(wc -l <"$log") log lines" >&2
    stop
}

shipped="$work/shipped"
mkdir -p "$shipped"
cp -r rules/rules.yaml templates "$shipped/"
shipped_count=$("$wxrules" check --rules "$shipped/rules.yaml" --templates "$shipped/templates" 2>/dev/null | grep -oE '[0-9]+ rules' | grep -oE '[0-9]+')

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" >&2
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; server workers: $WORKERS; WXRULES_LOG=$SERVER_LOG" >&2

# The account's service of the `service` and `call` workloads: a baseline process of its
# own, started once and kept for both; $service_port.
service_port=""
start_service() {
    [ -z "$service_port" ] || return 0
    local saved_pid=$pid saved_port=$port saved_log=$log
    start service "$baseline" --workers "$WORKERS"
    service_pid=$pid
    service_port=$port
    pid=$saved_pid port=$saved_port log=$saved_log
}

# The Redis of the `redis` workloads: a redis-server of the script's own, started once on a
# free loopback port and kept; emptied before each run (a run's MsgIds must not be found
# by the next one as answered); $redis_url.
redis_url=""
start_redis() {
    if [ -z "$redis_url" ]; then
        command -v redis-server >/dev/null || { echo "the redis workloads need redis-server" >&2; exit 1; }
        local p
        p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
        pids+=("$!")
        until redis-cli -p "$p" ping >/dev/null 2>&1; do sleep 0.05; done
        redis_url="redis://127.0.0.1:$p"
    fi
    redis-cli -u "$redis_url" flushall >/dev/null
    redis-cli -u "$redis_url" config resetstat >/dev/null
    redis_cpu0=$(redis_cpu)
}

# The CPU seconds redis-server has used, user + system (`INFO cpu`).
redis_cpu() {
    redis-cli -u "$redis_url" info cpu | tr -d '\r' |
        awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { t += $2 } END { printf "%.6f", t }'
}

# What the server asked Redis in a run, per request: the calls of each command
# (`INFO commandstats`; a script's own commands are counted too, under their names).
redis_stats() {
    redis-cli -u "$redis_url" info commandstats | tr -d '\r' | awk -F'[:=,]' -v n="$1" '
        /^cmdstat_/ && $1 !~ /config|info|flushall/ { printf "%s %.3f  ", substr($1, 9), $3 / n }
        END { printf "; " }' >&2
    echo "$redis_cpu0 $(redis_cpu)" | awk -v n="$1" '{ printf "redis-server CPU %.2f us per request\n", ($2 - $1) * 1e6 / n }' >&2
}

# The encrypted requests of a safe-mode run in $work/safe.txt (1.25 x what `shipped` did in
# DURATION), the first kept for the check; sets $check_path, $check_body, $server_env.
prepare_safe() {
    local n=$SAFE_REQUESTS
    if [ "$n" = auto ]; then
        n=$(awk -v r="${shipped_rps:-30000}" -v d="$DURATION" 'BEGIN { n = int(r * d * 1.25); print (n < 20000 ? 20000 : n) }')
    fi
    echo "safe: preparing $n encrypted requests" >&2
    python3 benches/wrk/make_safe.py --token "$TOKEN" --aes-key "$AES_KEY" --app-id "$APP_ID" \
        --count "$((n + 1))" --out "$work/safe.txt"
    # The first one is for the check; wrk never sends it.
    check_path=$(head -1 "$work/safe.txt" | cut -f1)
    check_body=$(head -1 "$work/safe.txt" | cut -f2)
    sed -i 1d "$work/safe.txt"
    server_env=(WXRULES_APPID="$APP_ID" WXRULES_AES_KEY="$AES_KEY")
}

# The shipped rules with a first rule that calls the service.
call_rules() {
    local dir="$work/call"
    mkdir -p "$dir"
    cp -r templates "$dir/"
    {
        echo "rules:"
        echo "  - name: bench-call"
        echo "    when: { keyword: { regex: '^查单(?P<order>\d+)\$' } }"
        echo "    call: { url: \"http://127.0.0.1:$service_port/service/orders/{{captures.order}}\" }"
        echo "    reply: { text: \"订单 {{captures.order}}：{{call.status}}\" }"
        echo "    on_error: { text: 查询暂时不可用 }"
        sed 1,/^rules:/d rules/rules.yaml
    } >"$dir/rules.yaml"
    echo "$dir"
}

run_baseline baseline
shipped_rps=""
# run_workload W SUFFIX: workload W on $wxrules, its rows named W + SUFFIX.
run_workload() {
    local w=$1 suffix=$2
    echo "== $w$suffix" >&2
    server_env=()
    server_args=()
    server_log=$SERVER_LOG
    check_path=$plain_path
    case $w in
    shipped | nolog)
        [ "$w" = shipped ] || server_log=warn,wxrules::cli=info,wxrules::reload=info
        check_body=$(plain_body price 2)
        run_wxrules "$w$suffix" "$shipped" "$shipped_count" "本周价格" benches/wrk/plain.lua "$plain_path" price 1000000000
        [ "$w$suffix" != shipped ] || shipped_rps=$rps
        ;;
    dashboard)
        # The shipped rules with the admin port on: the dashboard's ring of recent pushes
        # and last hits are kept on every push (compare with `shipped`).
        server_args=(--admin-listen 127.0.0.1:0)
        check_body=$(plain_body price 2)
        run_wxrules "dashboard$suffix" "$shipped" "$shipped_count" "本周价格" benches/wrk/plain.lua "$plain_path" price 1000000000
        ;;
    redis)
        start_redis
        server_args=(--store "$redis_url")
        check_body=$(plain_body price 2)
        run_wxrules "redis$suffix" "$shipped" "$shipped_count" "本周价格" benches/wrk/plain.lua "$plain_path" price 1000000000
        echo -n "redis$suffix: Redis commands per request: " >&2
        redis_stats "$requests"
        ;;
    redis-safe)
        start_redis
        server_args=(--store "$redis_url")
        prepare_safe
        run_wxrules "redis-safe$suffix" "$shipped" "$shipped_count" "<Encrypt>" benches/wrk/safe.lua "$work/safe.txt"
        rm -f "$work/safe.txt"
        echo -n "redis-safe$suffix: Redis commands per request: " >&2
        redis_stats "$requests"
        ;;
    retry)
        check_body=$(plain_body price 1000000000)
        run_wxrules "retry$suffix" "$shipped" "$shipped_count" "本周价格" benches/wrk/plain.lua "$plain_path" price 1000000000 fixed
        ;;
    safe)
        prepare_safe
        run_wxrules "safe$suffix" "$shipped" "$shipped_count" "<Encrypt>" benches/wrk/safe.lua "$work/safe.txt"
        rm -f "$work/safe.txt"
        ;;
    service)
        start_service
        local saved_pid=$pid saved_port=$port
        pid=$service_pid port=$service_port
        drive "service$suffix" benches/wrk/service.lua /service/orders/20261130
        row "service$suffix" - "$requests" "$rps" "$p50" "$p99" - - - - - "$(rss_mib "$pid")" - -
        pid=$saved_pid port=$saved_port
        ;;
    call)
        start_service
        dir=$(call_rules)
        check_body=$(plain_body 查单20261130 2)
        run_wxrules "call$suffix" "$dir" "$((shipped_count + 1))" "订单 20261130：已发货" benches/wrk/plain.lua "$plain_path" 查单20261130 1000000000
        ;;
    [0-9]*)
        dir=$(rules_file "$w")
        keyword=$(last_keyword "$w")
        check_body=$(plain_body "$keyword" 2)
        run_wxrules "$w$suffix" "$dir" "$((w + 1))" "reply ${keyword#kw} to oBenchUser" benches/wrk/plain.lua "$plain_path" "$keyword" 1000000000
        ;;
    *)
        echo "unknown workload $w" >&2
        exit 2
        ;;
    esac
}

for w in $WORKLOADS; do
    wxrules=$current
    run_workload "$w" ""
    if [ -n "$BEFORE" ]; then
        wxrules=$BEFORE
        run_workload "$w" -before
    fi
done
wxrules=$current
run_baseline baseline-end

# The table: ratios against the mean of the two baseline runs.
printf '%s\n' "${rows[@]}" | awk -F'\t' '
    { name[NR] = $1; line[NR] = $0 }
    $1 ~ /^baseline/ { brps += $4; bp99 += $6; nb++ }
    END {
        brps /= nb; bp99 /= nb
        print "| workload | rules | requests | req/s | p50 ms | p99 ms | × baseline req/s | × baseline p99 | start-up ms | reload ms | RSS start MiB | RSS settled MiB | peak MiB | RSS after run MiB | RSS after reload MiB | retries |"
        print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= NR; i++) {
            split(line[i], f, "\t")
            printf "| %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s |\n", \
                f[1], f[2], f[3], f[4], f[5], f[6], f[4] / brps, f[6] / bp99, f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14]
        }
        print ""
        print "| workload | server CPU per request, user µs | system µs | total µs |"
        print "| --- | ---: | ---: | ---: |"
        for (i = 1; i <= NR; i++) {
            split(line[i], f, "\t")
            printf "| %s | %.2f | %.2f | %.2f |\n", f[1], f[15], f[16], f[15] + f[16]
        }
    }'
