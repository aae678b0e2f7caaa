#!/usr/bin/env python3
"""Writes COUNT signed safe-mode (安全模式) pushes for benches/wrk/safe.lua.

Each line is `PATH_AND_QUERY<TAB>BODY`: a text message (Content = --content, a distinct
MsgId per line) sealed as WeChat seals it, AES-256-CBC with key = base64(EncodingAESKey +
"="), IV = key[:16], plaintext = 16 random bytes + 4-byte big-endian length + XML + AppID,
PKCS#7 to 32-byte blocks; and msg_signature = sha1(sorted([token, timestamp, nonce,
Encrypt]).join("")). The timestamp is fixed: serve with `--max-age 0`.

Written from WeChat's contract with the `cryptography` package, independently of
wxrules::crypto (pip-installs it if missing).

    make_safe.py --token T --aes-key K --app-id A --count N --out FILE [--content price]
"""

import argparse
import base64
import hashlib
import os
import struct
import subprocess
import sys

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:  # pragma: no cover
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "cryptography"])
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TIMESTAMP = "1795737600"
NONCE = "1320562132"
ACCOUNT = "gh_bench"
USER = "oBenchUser"


def sign(*parts):
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--token", required=True)
    p.add_argument("--aes-key", required=True, help="the 43-character EncodingAESKey")
    p.add_argument("--app-id", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--content", default="price")
    p.add_argument("--first-msgid", type=int, default=7_000_000_000_000_000)
    a = p.parse_args()

    key = base64.b64decode(a.aes_key + "=")
    assert len(key) == 32, "EncodingAESKey must decode to 32 bytes"
    cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))
    app_id = a.app_id.encode()
    plain_signature = sign(a.token, TIMESTAMP, NONCE)
    prefix = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{USER}]]></FromUserName>"
        f"<CreateTime>{TIMESTAMP}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{a.content}]]></Content><MsgId>"
    ).encode()
    with open(a.out, "w", encoding="utf-8") as out:
        for n in range(a.count):
            xml = prefix + str(a.first_msgid + n).encode() + b"</MsgId></xml>"
            plain = os.urandom(16) + struct.pack(">I", len(xml)) + xml + app_id
            pad = 32 - len(plain) % 32
            plain += bytes([pad]) * pad
            enc = cipher.encryptor()
            encrypt = base64.b64encode(enc.update(plain) + enc.finalize()).decode()
            query = (
                f"/wechat?signature={plain_signature}&timestamp={TIMESTAMP}&nonce={NONCE}"
                f"&openid={USER}&encrypt_type=aes&msg_signature="
                f"{sign(a.token, TIMESTAMP, NONCE, encrypt)}"
            )
            body = (
                f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            )
            out.write(f"{query}\t{body}\n")


if __name__ == "__main__":
    main()
