"""`twinsearch delete GALLERY (--class LABEL | --ids ID... | --client-ids CID...)`: delete items or a class."""

from __future__ import annotations

import argparse
import sys

from twinsearch.client.commands._common import (
    CommandLineError,
    add_connection_arguments,
    confirmed,
    connect,
    handles_errors,
    print_json,
)
from twinsearch.client.errors import NotFound


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Delete enrolled items from a gallery: a whole class (asks first, unless --yes), or items by their "
        "stored ids or client ids (ids that are not stored are no error). To delete the whole gallery: "
        "`twinsearch galleries delete NAME`."
    )
    parser.add_argument("gallery", metavar="GALLERY")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="label", metavar="LABEL", help="delete every item of this class")
    what.add_argument("--ids", nargs="+", action="extend", type=int, metavar="ID",
                      help="stored ids (as enroll and search print them; repeatable)")
    what.add_argument("--client-ids", nargs="+", action="extend", metavar="CID",
                      help="client ids (with `twinsearch index`: the files' paths relative to the folder; repeatable)")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="delete a class without asking (needed when stdin is not a terminal)")
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    if args.label == "":
        raise CommandLineError("--class is empty: give the label of the class to delete")
    with connect(args) as client:
        if args.label is not None and not args.yes:
            # Ask about what exists: an unknown gallery or class is an error before any question.
            count = next((c.count for c in client.classes(args.gallery) if c.label == args.label), None)
            if count is None:
                raise NotFound(f"gallery {args.gallery!r} has no class {args.label!r}")
            if not confirmed(f"delete class {args.label!r} and its {count} items from gallery {args.gallery!r}?"):
                print(f"class {args.label!r} not deleted", file=sys.stderr)
                return 1
        if args.label is not None:
            deleted = client.delete(args.gallery, label=args.label)
        else:
            deleted = client.delete(args.gallery, args.ids or (), client_ids=args.client_ids or ())
    if args.json:
        print_json({"gallery": args.gallery, "deleted": deleted})
    else:
        what = f"class {args.label!r}" if args.label is not None else "the items given"
        print(f"deleted {deleted} items ({what}) from gallery {args.gallery!r}")
    return 0
