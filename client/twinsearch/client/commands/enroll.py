"""`twinsearch enroll GALLERY LABEL IMAGE...`: enroll a few images under one class."""

from __future__ import annotations

import argparse
import os
import sys

from twinsearch.client.commands._common import (
    CommandLineError,
    add_connection_arguments,
    connect,
    handles_errors,
    print_json,
    table,
)
from twinsearch.client.errors import NotFound


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Enroll image files under one class label. All or nothing: one file that cannot be enrolled stores "
        "none of them, unless --skip-invalid. Without --ids every run stores the images again; with client "
        "ids (one per image) a re-run stores nothing new. For a whole folder tree use `twinsearch index`."
    )
    parser.add_argument("gallery", metavar="GALLERY", help="the gallery to enroll into")
    parser.add_argument("label", metavar="LABEL", help="the class the images belong to")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--ids", nargs="+", action="extend", metavar="ID",
                        help="client ids, one per image, in the order of the images (repeatable): makes enrolling "
                             "again store nothing new")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                        help="metadata stored with every image (repeatable); search returns it")
    parser.add_argument("--create", action="store_true", help="create the gallery (default settings) if missing")
    parser.add_argument("--model", metavar="NAME",
                        help="with --create: the server's model to bind a new gallery to (default: its default model)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="store the images that can be enrolled and list the others (exit status 1 if any "
                             "failed)")
    add_connection_arguments(parser)


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandLineError(f"--meta {pair!r}: give KEY=VALUE")
        out[key] = value
    return out


@handles_errors
def run(args: argparse.Namespace) -> int:
    if args.ids is not None and len(args.ids) != len(args.images):
        raise CommandLineError(f"{len(args.ids)} --ids for {len(args.images)} images: give one id per image")
    if args.ids is not None and not all(args.ids):
        raise CommandLineError(f"--ids: id {args.ids.index('') + 1} is empty: a client id is 1 character or more")
    folders = [image for image in args.images if os.path.isdir(image)]
    if folders and not args.skip_invalid:
        raise CommandLineError(f"{folders[0]} is a folder: enroll takes image files; a folder tree of one folder per "
                               f"class goes in with `twinsearch index {folders[0]} --gallery {args.gallery}`")
    metadata = _metadata(args.meta)
    with connect(args) as client:
        try:
            existing = client.get_gallery(args.gallery)
        except NotFound:
            if not args.create:
                raise NotFound(f"no gallery named {args.gallery!r}: give --create to create it") from None
            client.create_gallery(args.gallery, exist_ok=True, model=args.model)
        else:
            if args.model is not None and existing.model != args.model:
                raise CommandLineError(f"gallery {args.gallery!r} exists, bound to model {existing.model}: --model "
                                       "chooses the model of a gallery --create makes, and cannot change it")
        result = client.enroll(args.gallery, args.label, list(args.images), ids=args.ids, metadata=metadata,
                               skip_invalid=args.skip_invalid)
    status = 1 if result.failed else 0
    if args.json:
        print_json(result)
        return status
    stored = iter(result.stored)
    failed = {f.index: f for f in result.failed}
    rows = []
    for i, image in enumerate(args.images):
        if i in failed:
            rows.append((image, None, failed[i].client_id, "failed"))
            continue
        item = next(stored)
        if item.created:
            outcome = "stored"
        elif item.label != args.label:  # an id is enrolled once: its first label and image stay
            outcome = f"already stored under {item.label} (delete it first to change it)"
        else:
            outcome = "already stored"
        rows.append((image, item.id, item.client_id, outcome))
    print(table(rows, ["image", "id", "client id", "result"]))
    new = sum(1 for item in result.stored if item.created)
    print(f"{new} stored, {len(result.stored) - new} already stored, {len(failed)} failed "
          f"in gallery {args.gallery!r} under {args.label!r}")
    for failure in result.failed:
        print(f"error: {failure.reason}", file=sys.stderr)
    return status
