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
        "pairs, print a summary and write a PNG montage. Takes under half a minute on 2 CPU cores (about 20 "
        "seconds once the environment exists)."
    )
    parser.add_argument("--model", type=Path, help="model file (default: the model shipped with twinsearch)")
    parser.add_argument("--data", type=Path, metavar="ZIP",
                        help=f"the Omniglot zip holding the held-out alphabets, as downloaded (a zip file, not "
                             f"a folder; default: data/omniglot/{ZIP_NAME})")
    parser.add_argument("--alphabets", nargs="+", default=list(HELD_OUT), metavar="ALPHABET",
                        help="alphabets to use (default: the three held-out ones)")
    parser.add_argument("--probes-per-class", type=int, default=4, metavar="N",
                        help="other drawers' images identified per character, at least 1 (default: %(default)s)")
    parser.add_argument("--unknown-fraction", type=float, default=0.15, metavar="F",
                        help="fraction of characters kept out of the gallery, to test rejection, 0 (none: no "
                             "rejection figure) up to below 1 (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=200, metavar="N",
                        help="same pairs and as many different pairs to verify; 0: no verification "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the plan (default: %(default)s)")
    parser.add_argument("--montage", type=Path, default=Path("runs/demo-montage.png"), metavar="PNG",
                        help="where to write the montage (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    parser.add_argument("--startup-timeout", type=positive_seconds, default=180.0, metavar="S",
                        help="how long to wait for the server to come up (default: %(default)s)")



def print_summary(s: dict, info, seconds: float, exit_code: int, montage: Path) -> None:
    """The summary table; a figure that was not measured (None: no character kept out of the gallery, no
    pairs) reads n/a."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    unknown = (f"{pct(s['unknown_rejection'])}  ({s['unknown_probes']} probes of characters never enrolled)"
               if s["unknown_probes"] else "n/a  (no character kept out of the gallery)")
    verification = (f"{pct(s['verification_accuracy'])}  ({s['pairs']} pairs; TAR {pct(s['verification_tar'])}, "
                    f"FAR {pct(s['verification_far'])})" if s["pairs"] else "n/a  (no pairs: --pairs 0)")
    rows = [
        ("model", f"{info.model.name} ({info.model.fingerprint}, {info.model.dim}-d)"),
        ("gallery", f"{s['gallery_classes']} characters, ONE image each; {s['unknown_classes']} characters never enrolled"),
        ("one-shot identification, top-1",
         f"{pct(s['one_shot_top1'])}  ({s['known_probes']} probes by other drawers, {s['gallery_classes']}-way)"),
        ("one-shot identification, top-5", pct(s["one_shot_top5"])),
        (f"one-shot {s['within_alphabet_ways']}-way within alphabet", pct(s["within_alphabet_top1"])),
        ("open-set accuracy (right label)", f"{pct(s['open_set_accuracy'])}  (known probes wrongly rejected: "
                                            f"{pct(s['known_rejected'])})"),
        ("unknown rejection", unknown),
        ("verification accuracy", verification),
        ("threshold", "n/a" if s["threshold"] is None else f"{s['threshold']:.3f} ({s['threshold_source']})"),
        ("identify latency p50 / p99", f"{ms(s['identify_p50_ms'])} / {ms(s['identify_p99_ms'])} ms (one probe per call)"),
        ("verify latency p50 / p99", f"{ms(s['verify_p50_ms'])} / {ms(s['verify_p99_ms'])} ms (one pair per call)"
         if s["pairs"] else "n/a  (no pairs)"),
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


def usage_error(args: argparse.Namespace) -> str | None:
    """The one-line message for a flag value the demo cannot use, or None: told before the server starts."""
    if args.probes_per_class < 1:
        return f"--probes-per-class must be at least 1, got {args.probes_per_class}"
    if not 0 <= args.unknown_fraction < 1:
        return (f"--unknown-fraction is the fraction of characters kept out of the gallery, 0 or more and below 1 "
                f"(1 leaves the gallery empty), got {args.unknown_fraction:g}")
    if args.pairs < 0:
        return f"--pairs must be 0 (no verification) or more, got {args.pairs}"
    return data_error(args.data)


def data_error(path: Path | None) -> str | None:
    """The one-line message for a --data that is not a zip file, or None."""
    if path is None:
        return None
    what = f"--data takes the Omniglot zip file (such as data/omniglot/{ZIP_NAME})"
    if path.is_dir():
        return f"{what}, not a folder: {path} is a folder"
    if not path.exists():
        return f"{what}: {path} does not exist"
    if not zipfile.is_zipfile(path):
        return f"{what}: {path} is not a zip file"
    return None


def gallery_error(characters: dict, unknown_fraction: float) -> str | None:
    """The one-line message when --unknown-fraction leaves fewer than two characters to enroll, or None."""
    unknown = round(unknown_fraction * len(characters))
    if len(characters) - unknown >= 2:
        return None
    return (f"--unknown-fraction {unknown_fraction:g} keeps {unknown} of the {len(characters)} characters out of the "
            f"gallery, leaving {len(characters) - unknown} to enroll; one-shot identification needs at least 2: "
            "lower --unknown-fraction or give more --alphabets")


def run(args: argparse.Namespace) -> int:
    from twinsearch.client import montage
    from twinsearch.client.errors import TwinsearchError
    from twinsearch.client.remote import Client

    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}", flush=True)

    # What the command line asks for is checked before the server starts: one line, exit status 2.
    if (message := usage_error(args)) is not None:
        print(f"twinsearch demo: {message}", file=sys.stderr)
        return 2
    try:
        data = find_data(args.data)
        characters = load_characters(data, args.alphabets)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        print(f"twinsearch demo: {exc}", file=sys.stderr)
        return 2
    if (message := gallery_error(characters, args.unknown_fraction)) is not None:
        print(f"twinsearch demo: {message}", file=sys.stderr)
        return 2
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
