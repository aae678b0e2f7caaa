#!/usr/bin/env python3
"""Load driver for benches/soak.sh: mixed WeChat traffic against one wxrules on loopback.

Worker processes each keep one HTTP/1.1 connection to 127.0.0.1 and send, until the
deadline, a weighted mix of: valid signed pushes (every fixture in tests/data/messages,
each with a fresh MsgId or CreateTime), wrong signatures, malformed XML, bodies over
64 KiB, safe-mode bodies with garbage Encrypt, and /healthz and /metrics reads. Each kind
has the statuses it may get; anything else is counted as unexpected, a 5xx as such.

The parent process samples the server's VmRSS from /proc every RSS_EVERY seconds and sends
it SIGHUP every HUP_EVERY seconds, alternating a good rules file and a broken one, so
that both an applied and a rejected reload happen under load. Only 127.0.0.1 is ever
contacted, and everything stops at the deadline.

Usage: soak.py --pid PID --port PORT --duration S --rules-dir DIR --fixtures DIR
"""

import argparse
import glob
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import time

TOKEN = os.environ.get("WXRULES_TOKEN", "soak-token")
HOST = "127.0.0.1"

# (kind, weight, statuses it may get)
MIX = [
    ("valid", 60, {200}),
    ("bad_signature", 10, {403}),
    ("malformed", 12, {400}),
    ("oversize", 3, {413}),
    ("safe_garbage", 5, {400}),
    ("healthz", 5, {200}),
    ("metrics", 5, {200}),
]


def sign(*parts):
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signed_query(rng):
    ts = str(int(time.time()))
    nonce = str(rng.randrange(10**18))  # unique: a signed query seen with another body is refused
    return f"timestamp={ts}&nonce={nonce}&signature={sign(TOKEN, ts, nonce)}"


class Traffic:
    """Builds each kind of request; `seq` makes MsgIds and CreateTimes unique per worker."""

    def __init__(self, fixtures, worker):
        self.rng = random.Random(worker)
        self.seq = worker * 10**12
        self.fixtures = [
            open(path, encoding="utf-8").read()
            for path in sorted(glob.glob(os.path.join(fixtures, "*.xml")))
            if "Encrypt" not in open(path, encoding="utf-8").read()
        ]

    def fresh(self):
        self.seq += 1
        xml = self.rng.choice(self.fixtures)
        if "<MsgId>" in xml:
            xml = re.sub(r"<MsgId>\d+</MsgId>", f"<MsgId>{self.seq}</MsgId>", xml)
        else:  # events: retries are keyed on FromUserName + CreateTime
            xml = re.sub(r"<CreateTime>\d+</CreateTime>", f"<CreateTime>{self.seq}</CreateTime>", xml)
        return xml.encode()

    def request(self, kind):
        """(method, path, body)"""
        rng = self.rng
        if kind == "valid":
            return "POST", "/wechat?" + signed_query(rng), self.fresh()
        if kind == "bad_signature":
            query = signed_query(rng).replace("signature=", "signature=0")[:-1]
            return "POST", "/wechat?" + query, self.fresh()
        if kind == "malformed":
            body = self.fresh()
            choice = rng.randrange(5)
            if choice == 0:
                body = body[: rng.randrange(len(body) - 8)]
            elif choice == 1:
                body = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaa">]>' + body
            elif choice == 2:
                body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048)))
            elif choice == 3:
                body = b"<xml>" + b"<a>" * 5000
            else:
                body = body.replace(b"<CreateTime>", b"<CreateTime>-")
            return "POST", "/wechat?" + signed_query(rng), body
        if kind == "oversize":
            body = b"<xml><Content>" + b"x" * (70 * 1024) + b"</Content></xml>"
            return "POST", "/wechat?" + signed_query(rng), body
        if kind == "safe_garbage":
            encrypt = "".join(rng.choice("ABCDEFGHabcdefgh0123456789+/") for _ in range(rng.randrange(4, 400)))
            ts, nonce = str(int(time.time())), str(rng.randrange(10**18))
            query = (f"timestamp={ts}&nonce={nonce}&encrypt_type=aes"
                     f"&msg_signature={sign(TOKEN, ts, nonce, encrypt)}")
            body = f"<xml><ToUserName>gh_soak</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            return "POST", "/wechat?" + query, body.encode()
        if kind == "healthz":
            return "GET", "/healthz", None
        return "GET", "/metrics", None


def worker(index, port, deadline, fixtures, out):
    traffic = Traffic(fixtures, index)
    kinds = [k for k, _, _ in MIX]
    weights = [w for _, w, _ in MIX]
    allowed = {k: s for k, _, s in MIX}
    stats = {k: {} for k in kinds}
    latencies = []  # valid pushes only, in microseconds
    unexpected = []
    conn_errors = 0
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    while time.time() < deadline:
        kind = traffic.rng.choices(kinds, weights)[0]
        method, path, body = traffic.request(kind)
        started = time.perf_counter()
        try:
            headers = {"Content-Type": "text/xml"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
        except (OSError, http.client.HTTPException) as e:
            # A 413 may be sent before the whole body is read; the server then closes.
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            if kind == "oversize":
                stats[kind]["closed"] = stats[kind].get("closed", 0) + 1
            else:
                conn_errors += 1
                if len(unexpected) < 20:
                    unexpected.append(f"{kind}: {type(e).__name__}: {e}")
            continue
        if kind == "valid":
            latencies.append(int((time.perf_counter() - started) * 1e6))
        stats[kind][status] = stats[kind].get(status, 0) + 1
        if status not in allowed[kind] and len(unexpected) < 20:
            unexpected.append(f"{kind}: {status} {text[:120]!r}")
    conn.close()
    out.put({"stats": stats, "latencies": latencies, "unexpected": unexpected, "conn_errors": conn_errors})


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--hup-every", type=float, default=30)
    ap.add_argument("--rss-every", type=float, default=10)
    ap.add_argument("--rules-dir", required=True, help="the served copy of rules.yaml")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--report", required=True, help="write the JSON summary here")
    args = ap.parse_args()

    started = time.time()
    deadline = started + args.duration
    out = mp.Queue()
    procs = [mp.Process(target=worker, args=(i, args.port, deadline, args.fixtures, out))
             for i in range(args.workers)]
    for p in procs:
        p.start()

    rules = os.path.join(args.rules_dir, "rules.yaml")
    good = rules + ".good"
    shutil.copy(rules, good)
    rss = [(0.0, rss_kib(args.pid))]
    hups = 0
    next_rss = started + args.rss_every
    next_hup = started + args.hup_every
    while time.time() < deadline:
        time.sleep(max(0.0, min(next_rss, next_hup, deadline) - time.time()))
        now = time.time()
        if now >= next_hup and now < deadline:
            # Odd reloads get a broken file (rejected, old rules keep serving), even ones
            # the good file again (applied).
            if hups % 2 == 0:
                with open(rules, "a") as f:
                    f.write("\n  - name: broken\n    when: { keyword: { regex: '(' } }\n    ignore: true\n")
            else:
                shutil.copy(good, rules)
            os.kill(args.pid, signal.SIGHUP)
            hups += 1
            next_hup += args.hup_every
        if now >= next_rss:
            rss.append((round(now - started, 1), rss_kib(args.pid)))
            next_rss += args.rss_every
    shutil.copy(good, rules)
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    elapsed = time.time() - started
    rss.append((round(elapsed, 1), rss_kib(args.pid)))

    stats = {}
    latencies = []
    unexpected = []
    conn_errors = 0
    for r in results:
        for kind, by_status in r["stats"].items():
            for status, n in by_status.items():
                stats.setdefault(kind, {})
                stats[kind][str(status)] = stats[kind].get(str(status), 0) + n
        latencies += r["latencies"]
        unexpected += r["unexpected"]
        conn_errors += r["conn_errors"]
    latencies.sort()
    allowed = {k: {str(s) for s in ss} | {"closed"} for k, _, ss in MIX}
    total = sum(n for by in stats.values() for n in by.values())
    five_xx = sum(n for by in stats.values() for s, n in by.items() if s.startswith("5"))
    wrong = sum(n for k, by in stats.items() for s, n in by.items() if s not in allowed[k])
    report = {
        "seconds": round(elapsed, 1),
        "requests": total,
        "rps": round(total / elapsed),
        "by_kind": stats,
        "five_xx": five_xx,
        "unexpected_status": wrong,
        "connection_errors": conn_errors,
        "unexpected_samples": unexpected[:20],
        "valid_latency_us": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else 0,
        },
        "hups": hups,
        "rss_kib": rss,
    }
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
