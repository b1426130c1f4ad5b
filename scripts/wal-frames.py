#!/usr/bin/env python3
"""Which tables and indexes a SQLite WAL's commits wrote, frames per commit.

usage: scripts/wal-frames.py WAL_COPY DATABASE

WAL_COPY: a copy of `<db>-wal` taken while the server runs under load
(`cp` is enough: only frames of the current WAL generation, whose salts match
its header, are read, up to the first that does not). DATABASE: the database
file (a copy taken after the run will do: pages keep their owner unless
freed), read through SQLite's `dbstat` to name each page's b-tree.
"""
import collections
import sqlite3
import struct
import sys


def commits(wal):
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    offset, frames, current = 32, [], []
    while offset + 24 + page_size <= len(wal):
        page, db_size, s1, s2 = struct.unpack(">4I", wal[offset:offset + 16])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if db_size:  # a commit's last frame carries the database's size
            frames.append(current)
            current = []
        offset += 24 + page_size
    return page_size, frames


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        page_size, done = commits(f.read())
    if not done:
        sys.exit("no complete commit in this WAL copy")
    owner = dict(sqlite3.connect(sys.argv[2]).execute("SELECT pageno, name FROM dbstat"))
    per = collections.Counter(owner.get(page, "?") for commit in done for page in commit)
    total = sum(len(c) for c in done)
    print(f"{len(done)} commits, {total} frames of {page_size} bytes: {total / len(done):.1f} a commit")
    for name, n in per.most_common():
        print(f"{n / len(done):7.2f}  {name}")


if __name__ == "__main__":
    main()
