# Sourced by the Authenticate benchmarks (h2load-authenticate.sh,
# callgrind-authenticate.sh), after BIN is set: a fresh embedded SQLite in
# a temporary directory W, removed on exit with the server whose pid the
# script puts in SRV; one user, owner of workspace acme, and one workspace
# key, KEY; and frame(), which writes one gRPC request body for h2load.

W=$(mktemp -d)
export DATABASE_URL="sqlite://$W/velocity-auth.db"
SRV=
cleanup() { [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

va() { "$BIN" "$@" 2>>"$W/cli.log"; }
USER_ID=$(va user create --email bench@example.com --name Bench)
va workspace create --slug acme --name Acme >/dev/null
va member add --workspace acme --user "$USER_ID" --role owner
KEY=$(va key create --workspace acme --scopes issues:read --name bench)

# One gRPC message: a zero compression byte, a big-endian length, the
# protobuf (field 1, the credential; none for Health/Check).
frame() { # file credential
  python3 - "$1" "$2" <<'PY'
import struct, sys
cred = sys.argv[2].encode()
body = b"" if sys.argv[2] == "" else b"\x0a" + bytes([len(cred)]) + cred
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(body)) + body)
PY
}
