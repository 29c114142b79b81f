"""`twinsearch info`: the server's versions, model, calibrated thresholds and galleries."""

from __future__ import annotations

import argparse

from twinsearch.client.commands._common import (
    add_connection_arguments,
    connect,
    handles_errors,
    print_json,
    table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show what the server runs: its version, its models (name, fingerprint, embedding dimension, input "
        "size; the default first), the default model's calibrated thresholds with the rates measured at them, "
        "the index backend and the galleries."
    )
    add_connection_arguments(parser)


@handles_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.info()
    if args.json:
        print_json(info)
        return 0
    m = info.model
    # The name of the point as the table below and --threshold NAME give it ("eer", not the source "model_eer").
    default = m.default_threshold.value.removeprefix("model_") if m.default_threshold else "-"
    print(f"server      twinsearch {info.server_version} (API {info.api_version}) at {args.address}")
    print(f"model       {m.name}  fingerprint {m.fingerprint}")
    print(f"            {m.dim}-d embeddings, {m.metric} distance (smaller = more alike), input {_input(m.input)}")
    if len(info.models) > 1:
        rows = [(o.name + (" (default)" if o.name == m.name else ""), o.fingerprint, o.dim, _input(o.input))
                for o in info.models]
        print("\n" + table(rows, ["model", "fingerprint", "dim", "input (height x width)"]) + "\n")
    print(f"index       {info.index_backend}, {f'GPU x{info.gpu_count}' if info.gpu else 'CPU'}")
    print(f"galleries   {', '.join(info.galleries) or '(none)'}")
    if m.thresholds:
        print(f"\ncalibrated thresholds (default: {default}):")
        rows = [(p.name, p.distance, p.far, p.frr, p.genuine_pairs, p.impostor_pairs) for p in m.thresholds]
        print(table(rows, ["point", "distance", "FAR", "FRR", "genuine pairs", "impostor pairs"]))
    else:
        print("\nthe model carries no calibration: give thresholds explicitly")
    return 0


def _input(spec) -> str:
    """A model's input size as training's --size gives it, height first: "96 x 192, 1 channel"."""
    return f"{spec.height} x {spec.width}, {spec.channels} channel{'s' if spec.channels != 1 else ''}"
