"""`twinsearch delete GALLERY (--class LABEL | --ids ID... | --client-ids CID...)`: delete items or a class."""

from __future__ import annotations

import argparse
import sys

from twinsearch.client.commands._common import (
    add_connection_arguments,
    confirmed,
    connect,
    handles_errors,
    print_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Delete enrolled items from a gallery: a whole class (asks first, unless --yes), or items by their "
        "stored ids or client ids (ids that are not stored are no error). To delete the whole gallery: "
        "`twinsearch galleries delete NAME`."
    )
    parser.add_argument("gallery", metavar="GALLERY")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="label", metavar="LABEL", help="delete every item of this class")
    what.add_argument("--ids", nargs="+", type=int, metavar="ID", help="stored ids (as enroll and search print them)")
    what.add_argument("--client-ids", nargs="+", metavar="CID",
                      help="client ids (with `twinsearch index`: the files' paths relative to the folder)")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="delete a class without asking (needed when stdin is not a terminal)")
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.label is not None:
            if not args.yes and not confirmed(f"delete class {args.label!r} and all its items from gallery "
                                              f"{args.gallery!r}?"):
                print(f"class {args.label!r} not deleted", file=sys.stderr)
                return 1
            deleted = client.delete(args.gallery, label=args.label)
        else:
            deleted = client.delete(args.gallery, args.ids or (), client_ids=args.client_ids or ())
    if args.json:
        print_json({"gallery": args.gallery, "deleted": deleted})
    else:
        what = f"class {args.label!r}" if args.label is not None else "the items given"
        print(f"deleted {deleted} items ({what}) from gallery {args.gallery!r}")
    return 0
