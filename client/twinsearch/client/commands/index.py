"""`twinsearch index DIR... --gallery G`: bulk-enroll folder trees, one folder per class."""

from __future__ import annotations

import argparse
import sys

from twinsearch.client.commands._common import (
    add_connection_arguments,
    connect,
    handles_errors,
    print_json,
    table,
)
from twinsearch.client.errors import NotFound
from twinsearch.client.layout import survey


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Enroll every image under DIR into a gallery. Each folder at depth --class-depth is a class: with "
        "the default 1, DIR/alice/*.jpg is class 'alice'; with 2, DIR/Tagalog/character01/*.png is class "
        "'Tagalog/character01'. Each file's client id is its path relative to DIR, so running the same "
        "command again (after an interruption, or with new files) stores only what is missing. Files that "
        "cannot be enrolled (unreadable, undecodable, outside a class folder) do not stop the run: they are "
        "listed at the end, and the exit status is then 1 unless --allow-partial is given. Before sending, "
        "the classes found are listed with their image counts, with a warning when the class depth looks "
        "wrong or when several folders hold the same class names (their images would fill one class). With "
        "several folders, each file's id starts with its folder's name (photos/alice/1.png)."
    )
    parser.add_argument("folders", nargs="+", metavar="DIR", help="root of a folder tree (several: one run)")
    parser.add_argument("--gallery", "-g", required=True, help="the gallery to enroll into")
    parser.add_argument("--class-depth", type=int, default=1, metavar="N",
                        help="folder depth that names the class (default: %(default)s)")
    parser.add_argument("--create", action="store_true", help="create the gallery (default settings) if missing")
    parser.add_argument("--model", metavar="NAME",
                        help="with --create: the server's model to bind a new gallery to (default: its default model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per request (default: %(default)s)")
    parser.add_argument("--in-flight", type=int, default=4,
                        help="requests awaiting acknowledgement at once (default: %(default)s)")
    parser.add_argument("--id-prefix", default="", help="prefix of the client ids (default: none)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit with status 0 even when some files could not be enrolled")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    found = survey(args.folders, args.class_depth)
    notes = sys.stderr if args.json else sys.stdout  # keep --json output one JSON document
    print(found.summary(), file=notes, flush=True)
    for warning in found.warnings():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    with connect(args) as client:
        try:
            client.get_gallery(args.gallery)
        except NotFound:
            if not args.create:
                raise
            client.create_gallery(args.gallery, exist_ok=True, model=args.model)
        bar = None
        if not args.no_progress and not args.json:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="img", desc=f"index {args.gallery}", dynamic_ncols=True, file=sys.stderr)

        def progress(p) -> None:
            if bar is None:
                return
            bar.total = p.total
            bar.update(p.done - bar.n)
            bar.set_postfix(stored=p.stored, skipped=p.skipped, failed=p.failed, refresh=False)

        try:
            folders = args.folders[0] if len(args.folders) == 1 else args.folders
            report = client.enroll_folder(args.gallery, folders, class_depth=args.class_depth,
                                          batch_size=args.batch_size, max_in_flight=args.in_flight,
                                          id_prefix=args.id_prefix, progress=progress)
        finally:
            if bar is not None:
                bar.close()
    if args.json:
        print_json({**_summary(report), "failures": [{"path": f.path, "reason": f.reason} for f in report.failures]})
        return _status(report, args)
    if report.failures:
        print(f"\n{report.failed} files not enrolled:")
        for f in report.failures[:50]:
            print(f"  {f.path}: {f.reason}")
        if report.failed > 50:
            print(f"  ... and {report.failed - 50} more (--json lists them all)")
    s = _summary(report)
    print()
    print(table([[*(s[k] for k in ("gallery", "found", "sent", "stored", "skipped", "failed")),
                  f"{report.seconds:.1f}", f"{report.images_per_s:.0f}"]],
                ["gallery", "found", "sent", "stored", "skipped", "failed", "seconds", "images/s"]))
    return _status(report, args)


def _status(report, args: argparse.Namespace) -> int:
    """1 when some files were not enrolled (as cp and rsync do), unless --allow-partial."""
    if not report.failed or args.allow_partial:
        return 0
    print(f"error: {report.failed} of {report.found} files not enrolled "
          "(--allow-partial accepts a partial run)", file=sys.stderr)
    return 1


def _summary(report) -> dict:
    return {"gallery": report.gallery, "found": report.found, "sent": report.sent, "stored": report.stored,
            "skipped": report.skipped, "failed": report.failed, "seconds": round(report.seconds, 3),
            "images_per_s": round(report.images_per_s, 1)}
