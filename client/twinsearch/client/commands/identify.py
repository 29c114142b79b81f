"""`twinsearch identify IMAGE... --gallery G`: which enrolled class is each image, or unknown? (1:N)"""

from __future__ import annotations

import argparse
import sys

from twinsearch.client.commands._common import (
    add_connection_arguments,
    add_threshold_arguments,
    connect,
    handles_errors,
    jsonable,
    print_json,
    table,
)
from twinsearch.client.types import ProbeFailure, Scoring


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Identify images against a gallery: for each image, the enrolled classes ranked by class distance "
        "(smaller = more alike) and a decision: the nearest class when its distance is within the threshold, "
        "otherwise 'unknown' (open set)."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to identify")
    parser.add_argument("--gallery", "-g", required=True, help="the gallery to search")
    parser.add_argument("-k", "--k", type=int, default=None,
                        help="classes to rank per image (default: the server's)")
    parser.add_argument("--scoring", choices=[s.value for s in Scoring],
                        help="class distance: nearest exemplar, class prototype (mean) or mean of the k nearest "
                             "(default: the gallery's)")
    parser.add_argument("--mean-k", type=int, help="k for --scoring mean_of_k (default: the gallery's)")
    parser.add_argument("--labels", nargs="+", action="extend", metavar="LABEL",
                        help="consider only these classes (repeatable; default: all)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="answer the images that can be read and list the others, instead of stopping at "
                             "the first bad one (exit status 1 if any failed)")
    add_threshold_arguments(parser)
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        results = client.identify(args.gallery, list(args.images), k=args.k, scoring=args.scoring,
                                  mean_k=args.mean_k, threshold=args.threshold, target_far=args.target_far,
                                  labels=args.labels, skip_invalid=args.skip_invalid)
    failures = [r for r in results if isinstance(r, ProbeFailure)]
    status = 1 if failures else 0
    if args.json:
        print_json([{"image": image, **({"error": r.reason} if isinstance(r, ProbeFailure) else jsonable(r))}
                    for image, r in zip(args.images, results, strict=True)])
        return status
    rows = []
    for image, r in zip(args.images, results, strict=True):
        if isinstance(r, ProbeFailure):
            rows.append((image, "error", None, None, None, None, None, None, None))
            continue
        best = r.candidates[0] if r.candidates else None
        others = ", ".join(f"{c.label} {c.distance:.3f}" for c in r.candidates[1:args.k])
        rows.append((image, r.label if r.known else "unknown", best.label if best else None,
                     best.distance if best else None, best.probability if best else None,
                     r.threshold.distance, r.threshold.source.value if r.threshold.source else None, r.margin,
                     others or None))
    print(table(rows, ["image", "decision", "nearest class", "distance", "P(same)", "threshold", "source", "margin",
                       "next candidates"]))
    for failure in failures:
        print(f"error: {failure.reason}", file=sys.stderr)
    return status
