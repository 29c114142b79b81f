"""`twinsearch galleries [list|show|create|delete|classes|migrate]`: manage galleries."""

from __future__ import annotations

import argparse
import sys
import time

from twinsearch.client.commands._common import (
    CommandLineError,
    add_connection_arguments,
    confirmed,
    connect,
    handles_errors,
    print_json,
    table,
)
from twinsearch.client.errors import InvalidArgument
from twinsearch.client.types import KEEP, IndexKind, Scoring

CREATE_MEAN_K = 3  # `galleries create --mean-k` when not given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List, show, create or delete galleries, list a gallery's classes, or move a gallery to another model. "
        "A gallery is a named set of enrolled classes bound to one of the server's models. Without an action: list."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="all galleries with their counts (the default)")
    add_connection_arguments(listing, sub=True)
    show = actions.add_parser("show", help="one gallery's settings and counts")
    show.add_argument("name")
    add_connection_arguments(show, sub=True)
    create = actions.add_parser("create", help="create a gallery")
    create.add_argument("name", help="1-64 letters, digits, '_', '.', '-'")
    # Defaults are applied in `run`, so that --exist-ok can tell what was asked for (see _kept_settings).
    create.add_argument("--index", choices=[k.value for k in IndexKind],
                        help="exact (flat, the default), ivf or hnsw (approximate, for large galleries)")
    create.add_argument("--scoring", choices=[s.value for s in Scoring],
                        help="default class distance: nearest exemplar (default), prototype, mean_of_k")
    create.add_argument("--mean-k", type=int, help=f"k for mean_of_k scoring (default: {CREATE_MEAN_K})")
    create.add_argument("--threshold", type=_threshold, metavar="D|POINT",
                        help="this gallery's decision threshold instead of the model's default: a distance in "
                             "[0, 2], or one of the model's calibrated operating points (eer, far_1, far_0_1; "
                             "see `twinsearch info`), which is resolved to its distance now and kept as that "
                             "distance")
    create.add_argument("--cohort-threshold", type=float, metavar="S",
                        help="the threshold of cohort-normalized verify-class calls (--cohort) that give none: a "
                             "cohort score, not a distance of the model, measured on held-out classes in a gallery "
                             "of about this size (twinsearch evaluate --references R --cohort prints equal-error "
                             "ones); default: none, such calls give their own")
    create.add_argument("--model", metavar="NAME",
                        help="the server's model to bind the gallery to (see `twinsearch info`); default: its "
                             "default model")
    create.add_argument("--keep-images", action=argparse.BooleanOptionalAction, default=None,
                        help="keep each enrolled image beside the server's store, so that the gallery can be "
                             "moved to another model later with `galleries migrate` (it costs about 1 ms of "
                             "enrollment time and 4 KiB of disk per small image); default: the server's (on)")
    create.add_argument("--exist-ok", action="store_true", help="no error if it exists already")
    add_connection_arguments(create, sub=True)
    update = actions.add_parser(
        "set", help="change a gallery's thresholds or default scoring (what is not given is kept)",
        description="Change a gallery's decision settings; its items and index are untouched. Refused while the "
                    "gallery migrates to another model (the switch drops its thresholds): set them after it.")
    update.add_argument("name")
    given = update.add_mutually_exclusive_group()
    given.add_argument("--threshold", type=_threshold, metavar="D|POINT",
                       help="a new decision threshold: a distance in [0, 2], or one of the gallery's model's "
                            "operating points (eer, far_1, far_0_1), kept as its distance")
    given.add_argument("--no-threshold", action="store_true",
                       help="drop the gallery's threshold: the model's default applies again")
    cohort = update.add_mutually_exclusive_group()
    cohort.add_argument("--cohort-threshold", type=float, metavar="S",
                        help="a new threshold of cohort-normalized verify-class calls that give none")
    cohort.add_argument("--no-cohort-threshold", action="store_true",
                        help="drop it: cohort calls give their own threshold again")
    update.add_argument("--scoring", choices=[s.value for s in Scoring], help="a new default class distance")
    update.add_argument("--mean-k", type=int, help="a new k for mean_of_k scoring")
    add_connection_arguments(update, sub=True)
    delete = actions.add_parser("delete", help="delete a gallery and everything enrolled in it (asks first)")
    delete.add_argument("name")
    delete.add_argument("--yes", "-y", action="store_true",
                        help="delete without asking (needed when stdin is not a terminal)")
    add_connection_arguments(delete, sub=True)
    classes = actions.add_parser("classes", help="a gallery's enrolled classes with their item counts")
    classes.add_argument("name")
    add_connection_arguments(classes, sub=True)
    migrate = actions.add_parser(
        "migrate", help="move a gallery to another model: its kept images are embedded again in the background "
                        "while it keeps answering, then it switches",
        description="Move a gallery that keeps its images to another of the server's models. The server embeds "
                    "every item again from its kept image while the gallery keeps answering with its current "
                    "model, applies enrollments and deletions made meanwhile to both, then switches at once. The "
                    "gallery's own thresholds, if any, are dropped (they were of the old model). A restart "
                    "of the server resumes the migration; interrupting this command does not stop it: "
                    "--cancel does, and drops what it made.")
    migrate.add_argument("name", help="the gallery")
    goal = migrate.add_mutually_exclusive_group(required=True)
    goal.add_argument("--to", metavar="MODEL", dest="model",
                      help="the model to move it to (a name from `twinsearch info`)")
    goal.add_argument("--cancel", action="store_true",
                      help="stop the gallery's migration (running, waiting for its model, or failed) and drop "
                           "the vectors it made: the gallery stays with its model, items and thresholds")
    migrate.add_argument("--no-wait", action="store_true",
                         help="start it and return; follow it with `twinsearch galleries show NAME`")
    migrate.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")
    add_connection_arguments(migrate, sub=True)
    add_connection_arguments(parser)


def _gallery_row(g) -> tuple:
    model = g.model or f"{g.model_fingerprint[:12]} (not held)"
    migration = "-"
    if g.migration is not None:
        m = g.migration
        migration = f"to {m.model or m.fingerprint[:12]}: {m.done}/{m.total} {m.state.value}"
    # Without an override of its own a gallery decides by its model's default operating point (`info`).
    threshold = "model's default" if g.threshold is None else g.threshold
    return (g.name, g.class_count, g.item_count, g.index.kind.value, g.scoring.value, threshold,
            g.cohort_threshold, model, g.dim, "yes" if g.keep_images else "no", migration)


def _threshold(text: str) -> float | str:
    """argparse type of --threshold: a distance, or an operating point name resolved by the server."""
    try:
        return float(text)
    except ValueError:
        if not text.replace("_", "").isalnum():
            raise argparse.ArgumentTypeError(f"{text!r} is neither a distance nor an operating point name") from None
        return text


def _resolved(client, threshold, model: str | None) -> tuple:
    """--threshold as the gallery keeps it: an operating point's name (of `model`) becomes its distance,
    with a note saying so; anything else is returned as it is, without a note."""
    if not isinstance(threshold, str):
        return threshold, None
    try:
        point = client.operating_point(threshold, model=model)
    except InvalidArgument as exc:
        raise CommandLineError(f"--threshold {threshold}: {exc.details}") from None
    return point.distance, (f"threshold: operating point {point.name} of the model is distance {point.distance:.4f} "
                            f"(FAR {point.far:.2%}, FRR {point.frr:.2%} on its calibration pairs); the gallery keeps "
                            "this distance")


_GALLERY_HEADERS = ["gallery", "classes", "items", "index", "scoring", "threshold", "cohort threshold", "model",
                    "dim", "images kept", "migration"]


@handles_errors
def run(args: argparse.Namespace) -> int:
    action = args.action or "list"
    with connect(args) as client:
        if action == "list":
            result = client.galleries()
            if args.json:
                print_json(result)
            elif result:
                print(table([_gallery_row(g) for g in result], _GALLERY_HEADERS))
            else:
                print("no galleries; create one with `twinsearch galleries create NAME`")
        elif action == "show":
            g = client.get_gallery(args.name)
            print_json(g) if args.json else print(table([_gallery_row(g)], _GALLERY_HEADERS))
        elif action == "set":
            threshold = None if args.no_threshold else KEEP if args.threshold is None else args.threshold
            cohort = None if args.no_cohort_threshold else KEEP if args.cohort_threshold is None else args.cohort_threshold
            if threshold is KEEP and cohort is KEEP and args.scoring is None and args.mean_k is None:
                raise CommandLineError("nothing to change: give --threshold, --no-threshold, --cohort-threshold, "
                                       "--no-cohort-threshold, --scoring or --mean-k")
            threshold, note = _resolved(client, threshold, client.get_gallery(args.name).model
                                        if isinstance(threshold, str) else None)
            g = client.update_gallery(args.name, threshold=threshold, cohort_threshold=cohort,
                                      scoring=args.scoring, mean_k=args.mean_k)
            print_json(g) if args.json else print(table([_gallery_row(g)], _GALLERY_HEADERS))
            if note:
                print(note, file=sys.stderr if args.json else sys.stdout)
        elif action == "create":
            threshold, note = _resolved(client, args.threshold, args.model)
            g = client.create_gallery(args.name, index=args.index or "exact", scoring=args.scoring or "nearest",
                                      mean_k=CREATE_MEAN_K if args.mean_k is None else args.mean_k,
                                      threshold=threshold, exist_ok=args.exist_ok, model=args.model,
                                      keep_images=args.keep_images, cohort_threshold=args.cohort_threshold)
            print_json(g) if args.json else print(table([_gallery_row(g)], _GALLERY_HEADERS))
            if note:
                print(note, file=sys.stderr if args.json else sys.stdout)
            kept = _kept_settings(g, args, threshold)
            if kept:
                print(f"note: gallery {args.name!r} exists already and --exist-ok left it as it was: {kept} (change "
                      f"thresholds and scoring with `twinsearch galleries set {args.name}`)", file=sys.stderr)
        elif action == "delete":
            if not args.yes and not confirmed(f"delete gallery {args.name!r} and its "
                                               f"{client.get_gallery(args.name).item_count} items?"):
                print(f"gallery {args.name!r} not deleted", file=sys.stderr)
                return 1
            deleted = client.delete_gallery(args.name)
            if args.json:
                print_json({"gallery": args.name, "items_deleted": deleted})
            else:
                print(f"deleted gallery {args.name!r} ({deleted} items)")
        elif action == "migrate":
            return _migrate(client, args)
        elif action == "classes":
            result = client.classes(args.name)
            if args.json:
                print_json(result)
            else:
                print(table([(c.label, c.count) for c in result], ["class", "items"]))
                print(f"{len(result)} classes, {sum(c.count for c in result)} items")
    return 0


def _kept_settings(g, args: argparse.Namespace, threshold: float | None) -> str:
    """What `galleries create` asked for that the gallery it got does not have (it existed, --exist-ok): "" if none."""
    asked = [("index", args.index, g.index.kind.value), ("scoring", args.scoring, g.scoring.value),
             ("mean-k", args.mean_k, g.mean_k), ("model", args.model, g.model),
             ("keep-images", args.keep_images, g.keep_images)]
    differ = [f"{name} {have}, not {want}" for name, want, have in asked if want is not None and want != have]
    for name, want, have in (("threshold", threshold, g.threshold),
                             ("cohort threshold", args.cohort_threshold, g.cohort_threshold)):
        if want is not None and (have is None or abs(have - want) > 1e-6):
            differ.append(f"{name} {'none' if have is None else f'{have:.4f}'}, not {want:.4f}")
    return "; ".join(differ)


POLL_S = 0.5


def _migrate(client, args: argparse.Namespace) -> int:
    """Start the migration, then (unless --no-wait) follow it with a progress bar until the switch; or
    cancel it."""
    if args.cancel:
        g = client.cancel_migration(args.name)
        _print_gallery(g, args, f"gallery {args.name!r}: migration cancelled; it answers with model {g.model} as before")
        return 0
    start = client.migrate_gallery(args.name, args.model)
    out = sys.stderr if args.json else sys.stdout
    if start.dropped_threshold is not None:
        print(f"gallery {args.name!r}: its threshold {start.dropped_threshold:.4f} is dropped at the switch (it was a "
              f"distance of the old model); set one for the new model after it with `twinsearch galleries set "
              f"{args.name} --threshold D` if needed", file=out)
    if start.dropped_cohort_threshold is not None:
        print(f"gallery {args.name!r}: its cohort threshold {start.dropped_cohort_threshold:.4f} is dropped at the "
              "switch (it was a cohort score of the old model's embeddings); cohort calls give their own after it",
              file=out)
    if args.no_wait:
        print_json(start) if args.json else print(table([_gallery_row(start.gallery)], _GALLERY_HEADERS))
        return 0
    bar = None
    if not args.no_progress and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="img", desc=f"migrate {args.name} to {args.model}", dynamic_ncols=True,
                   file=sys.stderr)
    started = time.monotonic()
    try:
        while True:
            g = client.get_gallery(args.name)
            m = g.migration
            if m is None:
                break
            if bar is not None:
                bar.total = m.total
                bar.update(m.done - bar.n)
            if m.state.value != "running":
                raise CommandLineError(f"the migration of gallery {args.name!r} is {m.state.value}"
                                       f"{': ' + m.error if m.error else ''}")
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print(f"interrupted: the migration goes on in the server (follow it with `twinsearch galleries show "
              f"{args.name}`, stop it with `twinsearch galleries migrate {args.name} --cancel`)", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    seconds = time.monotonic() - started
    _print_gallery(g, args, f"gallery {args.name!r} now answers with model {g.model} ({g.item_count} items, "
                            f"{seconds:.1f} s)")
    return 0


def _print_gallery(g, args: argparse.Namespace, line: str) -> None:
    """The gallery as JSON, or as a table row followed by `line`."""
    if args.json:
        print_json(g)
    else:
        print(table([_gallery_row(g)], _GALLERY_HEADERS))
        print(line)
