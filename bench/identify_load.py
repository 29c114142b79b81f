"""Identify from many clients against a gallery store built beforehand, for trying server settings.

    python -m bench.build_store --data /tmp/store1m --n 1000000 --classes 100000 --dim 128 \\
        --fingerprint "$(python -c 'from twinsearch.encoder.model import load_model; print(load_model().fingerprint)')" \\
        --kind exact
    python -m bench.identify_load --data /tmp/store1m [--clients 32] [--probes 512] [-- SERVE FLAGS ...]

Starts `twinsearch serve` on the store (the default model), sends one probe vector per call from each of
`--clients` threads (probes drawn as `bench.gallery` draws them, from the same seeded classes), and
prints queries/s, p50 and p99 and the load average as one JSON line. The gallery section of
`bench.run` builds its own stores; this one reuses a store, so that settings can be compared quickly,
interleaved, on the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.common import Clustered, run_concurrent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a store made by bench.build_store")
    ap.add_argument("--n", type=int, default=1_000_000, help="its size, to draw the same probes (default 1M)")
    ap.add_argument("--classes", type=int, default=100_000, help="its classes (default 100,000)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--probes", type=int, default=512)
    ap.add_argument("serve_flags", nargs="*", help="more `twinsearch serve` flags (after --)")
    args = ap.parse_args(argv)
    from twinsearch.client import Client
    from twinsearch.client.server_process import ServerProcess

    probes, _ = Clustered(args.n, args.classes, 128).probes(args.probes)
    server = ServerProcess.start(args.data, None, flags=args.serve_flags, timeout_s=300, stop_timeout_s=120)
    with server:
        def call(client, i):
            client.identify("bench", probes[i], k=5)
            return 1

        res = run_concurrent(args.clients, list(range(len(probes))), call,
                             lambda: Client(server.address, timeout=600.0), warmup=args.clients)
    print(json.dumps({"flags": args.serve_flags, "clients": args.clients, **res.summary(),
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
