"""`twinsearch verify A B`: are two images the same class? (1:1)"""

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare two images with the server's model: their embedding distance (smaller = more alike), "
        "the decision (same when distance <= threshold), the threshold used and where it came from, and "
        "the calibrated probability of 'same'. Exit status 0 either way; read the decision from the output."
    )
    parser.add_argument("a", metavar="A", help="first image file")
    parser.add_argument("b", metavar="B", help="second image file")
    parser.add_argument("--model", metavar="NAME",
                        help="the server's model to compare with (see `twinsearch info`); default: its default model")
    add_threshold_arguments(parser, gallery=False)
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        v = client.verify(args.a, args.b, threshold=args.threshold, target_far=args.target_far, model=args.model)
    if args.json:
        print_json({"a": args.a, "b": args.b, **jsonable(v)})
        return 0
    rows = [(args.a, args.b, "same" if v.same else "different", v.distance, v.threshold.distance,
             v.threshold.source.value if v.threshold.source else "-", v.probability)]
    print(table(rows, ["A", "B", "decision", "distance", "threshold", "source", "P(same)"]))
    return 0

