#!/usr/bin/env python3
"""Ask Velocity Auth who is calling: one AuthService/Authenticate call.

Needs only python3 and curl (HTTP/2 cleartext, which gRPC without TLS is),
so the README's examples run where grpcurl is not installed. With grpcurl,
the same call is (server reflection is on, no proto files needed):

    grpcurl -plaintext -d '{"credential":"…","workspace_slug":"acme","required_scopes":["issues:write"]}' \\
      127.0.0.1:50051 velocity.auth.v1.AuthService/Authenticate

Prints the principal as grpcurl would (proto3 JSON) and exits 0; on a
refusal prints the gRPC code, message and FailureReason to stderr and exits 1.

usage: authenticate.py CREDENTIAL [--slug SLUG] [--scope SCOPE]... [--addr HOST:PORT]
"""

import argparse
import base64
import datetime
import json
import os
import struct
import subprocess
import sys
import tempfile
import urllib.parse

METHOD = "/velocity.auth.v1.AuthService/Authenticate"
PRINCIPAL_KINDS = ["PRINCIPAL_KIND_UNSPECIFIED", "WORKSPACE_KEY", "PERSONAL_KEY",
                   "OAUTH_ACCESS_TOKEN", "SESSION"]
CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
         "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
         "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
         "UNAUTHENTICATED"]


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def fields(message):
    """(number, value) pairs of a protobuf message: ints for varints, bytes else."""
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(message, i)
        elif wire == 2:
            length, i = read_varint(message, i)
            value, i = message[i:i + length], i + length
        elif wire == 1:
            value, i = message[i:i + 8], i + 8
        elif wire == 5:
            value, i = message[i:i + 4], i + 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield number, value


def read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def principal_json(message):
    names = {2: "userId", 3: "workspaceId", 4: "workspaceSlug", 6: "credentialId",
             8: "clientId", 9: "role"}
    out = {}
    for number, value in fields(message):
        if number == 1:
            out["kind"] = PRINCIPAL_KINDS[value] if value < len(PRINCIPAL_KINDS) else value
        elif number == 5:
            out.setdefault("scopes", []).append(value.decode())
        elif number == 7:
            seconds = dict(fields(value)).get(1, 0)
            at = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
            out["expiresAt"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif number in names:
            out[names[number]] = value.decode()
    return out


def refusal(headers):
    code = int(headers.get("grpc-status", "2"))
    out = {"code": CODES[code] if code < len(CODES) else code,
           "message": urllib.parse.unquote(headers.get("grpc-message", ""))}
    details = headers.get("grpc-status-details-bin")
    if details:
        status = base64.b64decode(details + "=" * (-len(details) % 4))
        for number, any_value in fields(status):
            if number != 3:
                continue
            parts = dict(fields(any_value))
            if parts.get(1, b"").endswith(b"google.rpc.ErrorInfo"):
                info = dict(fields(parts.get(2, b"")))
                out["reason"] = info.get(1, b"").decode()
                out["domain"] = info.get(2, b"").decode()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("credential")
    parser.add_argument("--slug", default="", help="X-Workspace-Slug")
    parser.add_argument("--scope", action="append", default=[], help="a required scope (repeat)")
    parser.add_argument("--addr", default=os.environ.get("VELOCITY_GRPC_ADDR", "127.0.0.1:50051"))
    args = parser.parse_args()

    request = string_field(1, args.credential)
    if args.slug:
        request += string_field(2, args.slug)
    for scope in args.scope:
        request += string_field(3, scope)
    frame = b"\x00" + struct.pack(">I", len(request)) + request

    with tempfile.NamedTemporaryFile() as header_file:
        answer = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10",
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--data-binary", "@-", "-D", header_file.name, "-o", "-",
             f"http://{args.addr}{METHOD}"],
            input=frame, stdout=subprocess.PIPE, check=False)
        if answer.returncode != 0:
            sys.exit(2)
        # Response headers and trailers alike (a refusal may be trailers-only).
        headers = {}
        for line in open(header_file.name, encoding="latin-1"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()

    if headers.get("grpc-status", "0") != "0":
        print(json.dumps(refusal(headers)), file=sys.stderr)
        sys.exit(1)
    body = answer.stdout
    if len(body) < 5:
        print("no answer from the server", file=sys.stderr)
        sys.exit(2)
    (length,) = struct.unpack(">I", body[1:5])
    response = dict(fields(body[5:5 + length]))
    print(json.dumps({"principal": principal_json(response.get(1, b""))}, indent=2))


if __name__ == "__main__":
    main()
