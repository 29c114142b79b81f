"""`twinsearch demo`: the one-shot Omniglot demo, end to end (what `make demo` runs).

1. start `twinsearch serve` (the shipped default model, or --model) on a free local port over a
   temporary data folder, as a subprocess;
2. create a gallery and enroll ONE drawer's image of each character of the held-out alphabets
   (Japanese katakana, Sanskrit, Tagalog), keeping some characters out of the gallery entirely;
3. identify other drawers' images of the enrolled characters (one-shot identification, N-way over all
   enrolled characters) and images of the characters never enrolled (which should come back unknown),
   and verify same / different pairs, one call per probe or pair, through the client;
4. print a summary (one-shot accuracy, verification accuracy, unknown rejection, latencies), write a
   PNG montage of probes with the class they were identified as, green right and red wrong;
5. stop the server with SIGTERM and check it exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from twinsearch.client.commands._common import positive_seconds, table
from twinsearch.client.demo.plan import HELD_OUT, ZIP_NAME, find_data, load_characters, make_plan
from twinsearch.client.demo.run import montage_tiles, run_demo
from twinsearch.client.server_process import ServerProcess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the one-shot Omniglot demo end to end: start a server with the default model on a free local "
        "port, enroll ONE image per character of the held-out alphabets, identify other drawers' images "
        "(and images of characters never enrolled, which should come back unknown), verify same/different "
        "pairs, print a summary and write a PNG montage. Takes a minute or two on 2 CPU cores."
    )
    parser.add_argument("--model", type=Path, help="model file (default: the model shipped with twinsearch)")
    parser.add_argument("--data", type=Path,
                        help=f"the Omniglot zip holding the held-out alphabets (default: data/omniglot/{ZIP_NAME})")
    parser.add_argument("--alphabets", nargs="+", default=list(HELD_OUT), metavar="ALPHABET",
                        help="alphabets to use (default: the three held-out ones)")
    parser.add_argument("--probes-per-class", type=int, default=4, metavar="N",
                        help="other drawers' images identified per character (default: %(default)s)")
    parser.add_argument("--unknown-fraction", type=float, default=0.15, metavar="F",
                        help="fraction of characters kept out of the gallery, to test rejection (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=200, metavar="N",
                        help="same pairs and as many different pairs to verify (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the plan (default: %(default)s)")
    parser.add_argument("--montage", type=Path, default=Path("runs/demo-montage.png"), metavar="PNG",
                        help="where to write the montage (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    parser.add_argument("--startup-timeout", type=positive_seconds, default=180.0, metavar="S",
                        help="how long to wait for the server to come up (default: %(default)s)")



def print_summary(s: dict, info, seconds: float, exit_code: int, montage: Path) -> None:
    pct = "{:.1%}".format
    rows = [
        ("model", f"{info.model.name} ({info.model.fingerprint}, {info.model.dim}-d)"),
        ("gallery", f"{s['gallery_classes']} characters, ONE image each; {s['unknown_classes']} characters never enrolled"),
        ("one-shot identification, top-1",
         f"{pct(s['one_shot_top1'])}  ({s['known_probes']} probes by other drawers, {s['gallery_classes']}-way)"),
        ("one-shot identification, top-5", pct(s["one_shot_top5"])),
        (f"one-shot {s['within_alphabet_ways']}-way within alphabet", pct(s["within_alphabet_top1"])),
        ("open-set accuracy (right label)", f"{pct(s['open_set_accuracy'])}  (known probes wrongly rejected: "
                                            f"{pct(s['known_rejected'])})"),
        ("unknown rejection", f"{pct(s['unknown_rejection'])}  ({s['unknown_probes']} probes of characters never enrolled)"),
        ("verification accuracy", f"{pct(s['verification_accuracy'])}  ({s['pairs']} pairs; TAR "
                                  f"{pct(s['verification_tar'])}, FAR {pct(s['verification_far'])})"),
        ("threshold", f"{s['threshold']:.3f} ({s['threshold_source']})"),
        ("identify latency p50 / p99", f"{s['identify_p50_ms']:.1f} / {s['identify_p99_ms']:.1f} ms (one probe per call)"),
        ("verify latency p50 / p99", f"{s['verify_p50_ms']:.1f} / {s['verify_p99_ms']:.1f} ms (one pair per call)"),
        ("montage", str(montage)),
        ("server", f"stopped cleanly (exit {exit_code})" if exit_code == 0 else f"exit status {exit_code}"),
        ("total time", f"{seconds:.0f} s"),
    ]
    print()
    print(table(rows, ["twinsearch demo: one-shot Omniglot", "result"]))
    if s.get("open_set"):
        print("\nopen set: the same identifications decided at each of the model's calibrated thresholds")
        print(table([(r["point"], f"{r['threshold']:.3f}", pct(r["right"]), pct(r["known_rejected"]),
                      pct(r["unknown_rejected"])) for r in s["open_set"]],
                    ["operating point", "threshold", "right label", "enrolled rejected", "never enrolled rejected"]))


def run(args: argparse.Namespace) -> int:
    from twinsearch.client import montage
    from twinsearch.client.errors import TwinsearchError
    from twinsearch.client.remote import Client

    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}", flush=True)

    try:
        data = find_data(args.data)
        characters = load_characters(data, args.alphabets)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        print(f"twinsearch demo: {exc}", file=sys.stderr)
        return 1
    plan = make_plan(characters, probes_per_class=args.probes_per_class, unknown_fraction=args.unknown_fraction,
                     pairs=args.pairs, seed=args.seed)
    say(f"{len(characters)} characters of {', '.join(args.alphabets)} from {data}")

    with tempfile.TemporaryDirectory(prefix="twinsearch-demo-") as tmp:
        say("starting `twinsearch serve` on a free local port ...")
        # Only --model configures the demo's server, never the caller's TWINSEARCH_* variables.
        server = ServerProcess(Path(tmp) / "data", args.model, keep_settings=False, stop_timeout_s=30.0)
        exit_code = None
        try:
            address = server.wait_ready(args.startup_timeout)
            say(f"server up on {address}")
            with Client(address, timeout=60.0) as client:
                info = client.info()
                say(f"model {info.model.name} ({info.model.fingerprint}), {info.model.dim}-d embeddings")
                summary, records = run_demo(client, plan, say, args.seed)
            path = montage.write(args.montage, montage_tiles(plan, records, seed=args.seed), columns=6,
                                 title="twinsearch one-shot demo: probe | enrolled exemplar of the predicted class "
                                       "(green right, red wrong)")
            say(f"montage written to {path}")
        except RuntimeError as exc:
            print(f"twinsearch demo: {exc}", file=sys.stderr)
            return 1
        except TwinsearchError as exc:
            print(f"twinsearch demo: {exc}", file=sys.stderr)
            print(f"server log (last lines):\n{server.tail()}", file=sys.stderr)
            return 1
        finally:
            if server.alive():
                say("stopping the server (SIGTERM) ...")
            exit_code = server.stop()
    seconds = time.perf_counter() - started
    summary.update(seconds=seconds, server_exit=exit_code, montage=str(path),
                   model=info.model.name, fingerprint=info.model.fingerprint)
    print_summary(summary, info, seconds, exit_code, path)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if exit_code == 0 else 1
