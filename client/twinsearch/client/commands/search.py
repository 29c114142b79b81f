"""`twinsearch search GALLERY IMAGE... -k K`: the nearest enrolled items of each image."""

from __future__ import annotations

import argparse

from twinsearch.client.commands._common import (
    add_connection_arguments,
    connect,
    handles_errors,
    jsonable,
    print_json,
    table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The k enrolled items nearest to each image, nearest first: stored id, client id, class, distance "
        "(smaller = more alike) and metadata. No decision is made: for 'which class, or unknown?' use "
        "`twinsearch identify`."
    )
    parser.add_argument("gallery", metavar="GALLERY", help="the gallery to search")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("-k", "--k", type=int, default=None, help="items per image (default: the server's)")
    parser.add_argument("--labels", nargs="+", action="extend", metavar="LABEL",
                        help="search only items of these classes (repeatable; default: all)")
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        results = client.search(args.gallery, list(args.images), k=args.k, labels=args.labels)
    if args.json:
        print_json([{"image": image, "neighbors": jsonable(r)} for image, r in zip(args.images, results, strict=True)])
        return 0
    rows = []
    for image, neighbours in zip(args.images, results, strict=True):
        for rank, n in enumerate(neighbours, 1):
            meta = ", ".join(f"{k}={v}" for k, v in sorted(n.metadata.items()))
            rows.append((image, rank, n.id, n.client_id, n.label, n.distance, meta or None))
    print(table(rows, ["image", "rank", "id", "client id", "class", "distance", "metadata"]))
    return 0
