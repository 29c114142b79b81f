"""`twinsearch backup DATA_DIR DEST`: a consistent copy of a server's data folder, taken while it serves
(`twinsearch.server.backup`)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from twinsearch.client.commands._common import print_json, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Copy a server's data folder (galleries, items, vectors, kept images, migrations and index snapshots) "
        "to a new folder, while the server goes on serving it. The copy holds one committed state of the "
        "store: every call the server had acknowledged when the copy began, none that came after. Restore by "
        "serving the copy: `twinsearch serve --data-dir DEST` with the models its galleries are bound to (their "
        "fingerprints are listed). An interrupted backup leaves nothing under DEST."
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the server's --data-dir")
    parser.add_argument("destination", type=Path, metavar="DEST", help="a new folder (or an empty one) for the copy")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from twinsearch.server.backup import backup

    try:
        report = backup(args.data_dir, args.destination)
    except (ValueError, OSError, sqlite3.DatabaseError) as exc:
        print(f"twinsearch backup: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(report)
        return 0
    if report.galleries:
        print(table([(g.name, g.items, g.fingerprint) for g in report.galleries], ["gallery", "items", "model fingerprint"]))
    rebuilt = (f"; {len(report.snapshots_left_out)} changed while copied, rebuilt from the database at first start"
               if report.snapshots_left_out else "")
    count = len(report.galleries)
    print(f"backed up {count} {'gallery' if count == 1 else 'galleries'}, {report.items} items ({report.database_bytes / 1e6:.1f} MB of "
          f"database, {report.snapshots_copied} index snapshots{rebuilt}) to {report.destination} in "
          f"{report.seconds:.1f} s")
    print(f"restore: twinsearch serve --data-dir {report.destination} with the models of those fingerprints")
    return 0
