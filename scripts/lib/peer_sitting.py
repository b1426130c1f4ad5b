"""A sitting's figures (scripts/peer-sitting.sh), each against the better
of oidc-provider's runs: the logs of the peer bench's two bench.sh, in
the order they ran (`<n>-<label>.log`).

usage: python3 scripts/lib/peer_sitting.py DIR
"""

import re
import sys
from pathlib import Path

# (label, the section's marker, what counts, its rate) in the order the
# bench runs them. The rate is wrk's own for introspection, the check's
# (answers verified, failures excluded) for the grants.
FIGURES = [
    ("introspection", r"\(a\)", r"Requests/sec:\s+([\d.]+)"),
    ("refresh", r"\(b\)", r"grants_per_s=([\d.]+)"),
    ("consent", r"\(c\)", r"codes_issued=\d+ failed=\d+ per_s=([\d.]+)"),
    ("exchanges", r"\(c\)", r"exchanges_per_s=([\d.]+)"),
]


def figures(text):
    """{label: (per second, p99 ms)} of one run; a figure it lacks is absent."""
    found = {}
    for label, section, rate in FIGURES:
        at = re.search(section, text)
        if not at:
            continue
        match = re.compile(rate + r".*?P99=([\d.]+)ms", re.S).search(text, at.end())
        if match:
            found[label] = (float(match.group(1)), float(match.group(2)))
    return found


def main(directory):
    runs = sorted(
        Path(directory).glob("*.log"), key=lambda p: int(p.name.split("-", 1)[0])
    )
    parsed = [(p.stem.split("-", 1)[1], figures(p.read_text())) for p in runs]
    peer = [f for label, f in parsed if label == "oidc"]
    best = {
        label: max(f[label][0] for f in peer if label in f)
        for label, _, _ in FIGURES
        if any(label in f for f in peer)
    }
    print("oidc-provider's better run: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in best.items()))
    for label, found in parsed:
        cells = []
        for figure, _, _ in FIGURES:
            if figure not in found:
                cells.append(f"{figure} -")
                continue
            rate, p99 = found[figure]
            ratio = "" if label == "oidc" or figure not in best else f" {rate / best[figure]:.2f}x"
            cells.append(f"{figure} {rate:,.0f}/s{ratio} p99 {p99} ms")
        print(f"{label:16} " + " | ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
