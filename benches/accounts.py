#!/usr/bin/env python3
"""An agency's wxrules: ACCOUNTS accounts of RULES rules each, in one process (issue 17).

Generates a config file and, per account, a rules file (exact, prefix and contains
keywords, keyword regexes with captures, menu clicks with news replies, follows, QR scans,
template files), a templates directory and a token file, under a scratch directory. Then,
ROUNDS times, with the release binary:

  start    launch to the public port answering a signed push (not /healthz alone: a push
           proves the accounts are served), in seconds
  rss      VmRSS once started, SETTLE s later, and the peak (VmHWM), in MB
  pushes   a signed push to the first, a middle and the last account, each answered by its
           own rule (checked)
  reload   one account's rules file changed, then POST /-/reload on the admin port: the
           time to the answer (the change is live when it comes: checked with a push), and
           the same with nothing changed; also a reload of a template of one account
  rss      after the reloads

With SHARED=1 every account uses one templates directory of the agency's (SHARED_TEMPLATES
files of about 2 KB, with blocks and helpers), as accounts of one brand kit do: its compiled
copy is shared by all (rules::registry).

Prints one line per round and a summary (median). Traffic goes to 127.0.0.1 only.

  benches/accounts.py                       # 1,000 x 200, 3 rounds
  SHARED=1 benches/accounts.py              # one templates directory for all
  ACCOUNTS=100 RULES=50 ROUNDS=1 benches/accounts.py
  WXRULES=target/release/wxrules benches/accounts.py
"""

import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNTS = int(os.environ.get("ACCOUNTS", 1000))
RULES = int(os.environ.get("RULES", 200))
ROUNDS = int(os.environ.get("ROUNDS", 3))
SETTLE = float(os.environ.get("SETTLE", 2))
WXRULES = os.environ.get("WXRULES", os.path.join(ROOT, "target/release/wxrules"))
TEMPLATES = 5
SHARED = os.environ.get("SHARED") == "1"
SHARED_TEMPLATES = int(os.environ.get("SHARED_TEMPLATES", 20))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rules_file(account, version):
    """RULES rules of the kinds an account has; the last one answers `hi-<account>`."""
    out = ["rules:"]
    rnd = random.Random(account)
    n = 0
    while n < RULES - 1:
        kind = n % 10
        name = f"r{n}"
        if kind < 5:
            out.append(f"  - name: {name}\n    when: {{ keyword: [价格{n}, price{n}, 报价{n}] }}\n"
                       f"    reply: {{ text: \"{account} 第{n}条：您好 {{{{FromUserName}}}}，本周价格 ¥{rnd.randint(9, 999)}\" }}")
        elif kind == 5:
            out.append(f"  - name: {name}\n    when: {{ keyword: {{ prefix: 订单{n}- }} }}\n"
                       f"    reply: {{ text: \"订单查询请稍候（{account}）\" }}")
        elif kind == 6:
            out.append(f"  - name: {name}\n    when: {{ keyword: {{ regex: '^查询{n}-(?P<id>[0-9]{{4,12}})$' }} }}\n"
                       f"    reply: {{ text: \"单号 {{{{captures.id}}}} 已收到\" }}")
        elif kind == 7:
            out.append(f"  - name: {name}\n    when: {{ event: CLICK, event_key: MENU_{n} }}\n"
                       f"    reply:\n      news:\n        - title: 菜单{n}\n          description: {account} 的活动\n"
                       f"          url: https://example.com/{account}/{n}\n          pic_url: https://example.com/{n}.jpg")
        elif kind == 8:
            out.append(f"  - name: {name}\n    when: {{ keyword: {{ contains: 客服{n} }} }}\n"
                       f"    reply: {{ text: {{ template: t{(n // 10) % (SHARED_TEMPLATES if SHARED else TEMPLATES)} }} }}")
        else:
            out.append(f"  - name: {name}\n    when: {{ event: SCAN, event_key: \"{n}\" }}\n"
                       f"    reply: {{ text: \"欢迎回来，场景 {{{{EventKey}}}}\" }}")
        n += 1
    out.append(f"  - name: hello\n    when: {{ keyword: hi-{account} }}\n"
               f"    reply: {{ text: \"hello from {account} v{version}\" }}")
    return "\n".join(out) + "\n"


def generate(base, admin, listen):
    with open(os.path.join(base, "wxrules.yaml"), "w") as config:
        config.write(f"listen: 127.0.0.1:{listen}\nadmin_listen: 127.0.0.1:{admin}\naccounts:\n")
        if SHARED:
            os.makedirs(os.path.join(base, "shared", "templates"))
            for t in range(SHARED_TEMPLATES):
                with open(os.path.join(base, "shared", "templates", f"t{t}.hbs"), "w") as f:
                    f.write(brand_template(t))
        for i in range(ACCOUNTS):
            name = f"a{i:04d}"
            os.makedirs(os.path.join(base, name))
            with open(os.path.join(base, name, "rules.yaml"), "w") as f:
                f.write(rules_file(name, 1))
            if SHARED:
                templates = "shared/templates"
            else:
                templates = f"{name}/templates"
                os.makedirs(os.path.join(base, templates))
                for t in range(TEMPLATES):
                    with open(os.path.join(base, templates, f"t{t}.hbs"), "w") as f:
                        f.write(f"{{{{#if FromUserName}}}}您好，{name} 客服 {t} 为您服务{{{{/if}}}}\n")
            with open(os.path.join(base, name, "token"), "w") as f:
                f.write(token(name) + "\n")
            config.write(f"  - name: {name}\n    rules: {name}/rules.yaml\n"
                         f"    templates: {templates}\n    token_file: {name}/token\n")


def brand_template(t):
    """About 2 KB of a brand kit's reply to a text message: blocks, helpers, defaults."""
    lines = [f"{{{{! 品牌模板 {t} }}}}", "{{#if FromUserName}}您好，{{FromUserName}}！{{else}}您好！{{/if}}"]
    for k in range(12):
        lines.append(f"{{{{#if MsgId}}}}【服务 {t}-{k}】您的消息 {{{{MsgId}}}} 已收到，回复 价格{k} 查询本周报价。"
                     f"{{{{else}}}}【服务 {t}-{k}】回复 客服 联系人工。{{{{/if}}}}")
    lines.append("{{#unless Content}}（无文字）{{/unless}}{{strip_prefix Content \"客服\"}}")
    lines.append("{{default Content \"（无文字）\"}} — 感谢关注。")
    return "\n".join(lines) + "\n"


def token(name):
    return "tok-" + name


def push(listen, name, content):
    ts, nonce = str(int(time.time())), str(random.randint(1, 10**9))
    signature = hashlib.sha1("".join(sorted([token(name), ts, nonce])).encode()).hexdigest()
    body = (f"<xml><ToUserName><![CDATA[gh_{name}]]></ToUserName><FromUserName><![CDATA[oBench]]></FromUserName>"
            f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{random.randint(1, 10**18)}</MsgId></xml>").encode()
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    conn.request("POST", f"/wechat/{name}?timestamp={ts}&nonce={nonce}&signature={signature}", body,
                 {"Content-Type": "text/xml"})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def admin_reload(admin):
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
    started = time.perf_counter()
    conn.request("POST", "/-/reload")
    response = conn.getresponse()
    report = json.loads(response.read())
    took = time.perf_counter() - started
    conn.close()
    return took, report


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def one_round(base, listen, admin):
    last = f"a{ACCOUNTS - 1:04d}"
    middle = f"a{ACCOUNTS // 2:04d}"
    env = dict(os.environ, WXRULES_LOG="warn")
    started = time.perf_counter()
    server = subprocess.Popen([WXRULES, "--config", os.path.join(base, "wxrules.yaml")],
                              stderr=subprocess.PIPE, env=env)
    try:
        while True:
            if server.poll() is not None:
                sys.exit(f"wxrules exited: {server.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - started > 60:
                server.kill()
                sys.exit(f"wxrules did not answer in 60 s: {server.stderr.read().decode()[-2000:]}")
            try:
                status, text = push(listen, last, f"hi-{last}")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.005)
        start = time.perf_counter() - started
        assert f"hello from {last} v1" in text, text
        rss_start = memory(server.pid)["VmRSS"]
        time.sleep(SETTLE)
        settled = memory(server.pid)
        for name in ("a0000", middle, last):
            status, text = push(listen, name, f"hi-{name}")
            assert status == 200 and f"hello from {name} v1" in text, (name, status, text)
        # One account's rules change: only it reloads.
        with open(os.path.join(base, middle, "rules.yaml"), "w") as f:
            f.write(rules_file(middle, 2))
        took, report = admin_reload(admin)
        assert report["outcome"] == "applied" and report["unchanged"] == ACCOUNTS - 1, report
        status, text = push(listen, middle, f"hi-{middle}")
        assert f"hello from {middle} v2" in text, text
        unchanged, report = admin_reload(admin)
        assert report["outcome"] == "unchanged", report
        # A template of the last account (with SHARED, of every account) changes.
        templates = "shared/templates" if SHARED else f"{last}/templates"
        with open(os.path.join(base, templates, "t1.hbs"), "a") as f:
            f.write("（已更新）\n")
        template, report = admin_reload(admin)
        assert report["outcome"] == "applied" and report["accounts"][0]["templates_changed"], report
        after = memory(server.pid)
        # Put the file back for the next round.
        with open(os.path.join(base, middle, "rules.yaml"), "w") as f:
            f.write(rules_file(middle, 1))
        return {
            "start_s": start,
            "rss_start_mb": rss_start,
            "rss_settled_mb": settled["VmRSS"],
            "peak_mb": settled["VmHWM"],
            "reload_one_ms": took * 1000,
            "reload_none_ms": unchanged * 1000,
            "reload_template_ms": template * 1000,
            "rss_after_mb": after["VmRSS"],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    if not os.path.exists(WXRULES):
        sys.exit(f"{WXRULES} not found: cargo build --release")
    base = tempfile.mkdtemp(prefix="wxrules-accounts-")
    try:
        listen, admin = free_port(), free_port()
        t = time.perf_counter()
        generate(base, admin, listen)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(base) for f in fs)
        kit = f"one directory of {SHARED_TEMPLATES} templates" if SHARED else f"{TEMPLATES} templates each"
        print(f"{ACCOUNTS} accounts x {RULES} rules ({ACCOUNTS * RULES:,} rules, {kit}, "
              f"{size / 1e6:.1f} MB of files) generated in {time.perf_counter() - t:.1f} s; {os.cpu_count()} cores")
        rows = []
        for i in range(ROUNDS):
            row = one_round(base, listen, admin)
            rows.append(row)
            print(f"round {i + 1}: " + "  ".join(f"{k}={v:.2f}" if "_s" in k else f"{k}={v:.0f}" for k, v in row.items()))
        print("median:  " + "  ".join(
            f"{k}={statistics.median(r[k] for r in rows):.2f}" if "_s" in k
            else f"{k}={statistics.median(r[k] for r in rows):.0f}" for k in rows[0]))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
