"""`twinsearch verify-class GALLERY LABEL IMAGE...`: is each image the enrolled class LABEL? (1:1 against a class)"""

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
        "Check each image against one enrolled class: the class distance (as identify computes it; smaller = "
        "more alike), the decision (same when distance <= threshold), the threshold and where it came from, "
        "and the calibrated probability of 'same'. Exit status 0 either way; read the decision from the output."
    )
    parser.add_argument("gallery", metavar="GALLERY", help="the gallery holding the class")
    parser.add_argument("label", metavar="LABEL", help="the enrolled class the images claim to be")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--scoring", choices=[s.value for s in Scoring],
                        help="class distance: nearest exemplar, class prototype (mean) or mean of the k nearest "
                             "(default: the gallery's)")
    parser.add_argument("--mean-k", type=int, help="k for --scoring mean_of_k (default: the gallery's)")
    parser.add_argument("--cohort", action="store_true",
                        help="divide the class distance by the fourth root of the image's distance to the nearest "
                             "other enrolled class: stricter with images near many classes (needs two classes or "
                             "more, and --threshold for that score unless the gallery was created with "
                             "--cohort-threshold: twinsearch evaluate --references R --cohort on held-out classes "
                             "prints one)")
    add_threshold_arguments(parser)
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        results = client.verify_class(args.gallery, list(args.images), args.label, scoring=args.scoring,
                                      mean_k=args.mean_k, threshold=args.threshold, target_far=args.target_far,
                                      cohort=args.cohort)
    if args.json:
        print_json([{"image": image, "label": args.label, **jsonable(v)}
                    for image, v in zip(args.images, results, strict=True)])
        return 0
    rows = [(image, args.label, "same" if v.same else "different", v.distance, v.threshold.distance,
             v.threshold.source.value if v.threshold.source else "-", v.probability)
            for image, v in zip(args.images, results, strict=True)]
    print(table(rows, ["image", "class", "decision", "cohort score" if args.cohort else "distance", "threshold",
                       "source", "P(same)"]))
    return 0
