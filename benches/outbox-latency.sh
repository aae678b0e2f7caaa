#!/usr/bin/env bash
# The Redis outbox's delivery latency: runs the test that starts a `wxrules serve` with
# `--store redis://…` (its own redis-server) and `--wechat-api` pointed at the WeChat
# stand-in on 127.0.0.1 (tests/common/fake_wechat.rs), pushes at once after start-up, then
# 20 pushes one after the other, and prints how long after each push its `send:` message
# reached the stand-in: the first one (and since launch), the median, min and max.
#
#   benches/outbox-latency.sh            # one run (debug build: what it waits for is I/O)
#   RUNS=5 benches/outbox-latency.sh     # five runs, one line each
#
# The test asserts only generous bounds (a lease period for the first, 1 s for the
# median); the figures are what this prints. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
cargo test --quiet --test wechat_api --no-run
for _ in $(seq "$RUNS"); do
    cargo test --quiet --test wechat_api -- --exact \
        the_redis_outbox_delivers_at_once_after_start_and_after_each_push --nocapture 2>&1 |
        grep -E '^outbox_latency:'
done
