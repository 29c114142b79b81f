"""`twinsearch identify IMAGE... --gallery G`: which enrolled class is each image, or unknown? (1:N)"""

from __future__ import annotations

import argparse

from twinsearch.client.commands._common import (
    add_connection_arguments,
    add_threshold_arguments,
    connect,
    handles_errors,
    jsonable,
    print_json,
    table,
)
from twinsearch.client.types import Scoring


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Identify images against a gallery: for each image, the enrolled classes ranked by class distance "
        "(smaller = more alike) and a decision: the nearest class when its distance is within the threshold, "
        "otherwise 'unknown' (open set)."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to identify")
    parser.add_argument("--gallery", "-g", required=True, help="the gallery to search")
    parser.add_argument("--k", type=int, default=5, help="classes to rank per image (default: %(default)s)")
    parser.add_argument("--scoring", choices=[s.value for s in Scoring],
                        help="class distance: nearest exemplar, class prototype (mean) or mean of the k nearest "
                             "(default: the gallery's)")
    parser.add_argument("--mean-k", type=int, help="k for --scoring mean_of_k (default: the gallery's)")
    parser.add_argument("--labels", nargs="+", metavar="LABEL", help="consider only these classes")
    add_threshold_arguments(parser)
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        results = client.identify(args.gallery, list(args.images), k=args.k, scoring=args.scoring,
                                  mean_k=args.mean_k, threshold=args.threshold, target_far=args.target_far,
                                  labels=args.labels)
    if args.json:
        print_json([{"image": image, **jsonable(r)} for image, r in zip(args.images, results, strict=True)])
        return 0
    rows = []
    for image, r in zip(args.images, results, strict=True):
        best = r.candidates[0] if r.candidates else None
        others = ", ".join(f"{c.label} {c.distance:.3f}" for c in r.candidates[1:args.k])
        rows.append((image, r.label if r.known else "unknown", best.label if best else None,
                     best.distance if best else None, best.probability if best else None,
                     r.threshold.distance, r.margin, others or None))
    print(table(rows, ["image", "decision", "nearest class", "distance", "P(same)", "threshold", "margin",
                       "next candidates"]))
    return 0
