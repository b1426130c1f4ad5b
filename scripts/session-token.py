#!/usr/bin/env python3
"""Mint a Supabase session token (HS256 JWT) for a user, as Supabase Auth
would issue it, signed with $SUPABASE_JWT_SECRET: for local trials only.

usage: session-token.py USER_ID [--ttl SECONDS]
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("user_id")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    args = parser.parse_args()
    secret = os.environ.get("SUPABASE_JWT_SECRET")
    if not secret:
        sys.exit("session-token.py: set SUPABASE_JWT_SECRET (the server's, too)")
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({
        "sub": args.user_id,
        "aud": os.environ.get("SUPABASE_JWT_AUDIENCE", "authenticated"),
        "role": "authenticated",
        "iat": now,
        "exp": now + args.ttl,
        "session_id": "local",
    }).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    print(f"{head}.{body}.{b64(signature)}")


if __name__ == "__main__":
    main()
