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
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinsearch.client.commands._common import table

HELD_OUT = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
ZIP_NAME = "images_background_small2.zip"
GALLERY = "omniglot-oneshot"
WAYS = 20
_FILE = re.compile(r"^(?P<root>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<name>\d+_(?P<drawer>\d+)\.png)$")


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
    parser.add_argument("--startup-timeout", type=float, default=180.0, metavar="S",
                        help="how long to wait for the server to come up (default: %(default)s)")


# ------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Sample:
    key: str        # alphabet/characterNN/file.png: the client id
    label: str      # alphabet/characterNN
    drawer: int
    data: bytes


@dataclass
class Plan:
    enrolled: list[Sample] = field(default_factory=list)       # one per enrolled character
    known_probes: list[Sample] = field(default_factory=list)   # other drawers of enrolled characters
    unknown_probes: list[Sample] = field(default_factory=list)  # characters never enrolled
    same_pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    different_pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    classes: int = 0
    unknown_classes: int = 0


def find_data(given: Path | None) -> Path:
    if given is not None:
        return given
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        candidate = base / "data" / "omniglot" / ZIP_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find data/omniglot/{ZIP_NAME}; run from the repository or pass --data")


def load_characters(path: Path, alphabets: list[str]) -> dict[str, list[Sample]]:
    """Every image of the chosen alphabets, by character label, sorted by drawer."""
    wanted = set(alphabets)
    by_label: dict[str, list[Sample]] = defaultdict(list)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            m = _FILE.match(name)
            if not m or m["alphabet"] not in wanted:
                continue
            label = f"{m['alphabet']}/{m['character']}"
            by_label[label].append(Sample(f"{label}/{m['name']}", label, int(m["drawer"]), zf.read(name)))
    missing = wanted - {label.split("/")[0] for label in by_label}
    if missing:
        raise FileNotFoundError(f"alphabets {sorted(missing)} not found in {path}")
    return {label: sorted(samples, key=lambda s: s.drawer) for label, samples in sorted(by_label.items())}


def make_plan(characters: dict[str, list[Sample]], *, probes_per_class: int, unknown_fraction: float,
              pairs: int, seed: int) -> Plan:
    rng = random.Random(seed)
    labels = list(characters)
    unknown = set(rng.sample(labels, round(unknown_fraction * len(labels))))
    plan = Plan(classes=len(labels) - len(unknown), unknown_classes=len(unknown))
    for label in labels:
        samples = list(characters[label])
        rng.shuffle(samples)
        if label in unknown:
            plan.unknown_probes.extend(samples[:probes_per_class])
            continue
        plan.enrolled.append(samples[0])  # ONE drawer's image: one-shot
        plan.known_probes.extend(samples[1:1 + probes_per_class])
    for _ in range(pairs):
        a, b = rng.sample(characters[rng.choice(labels)], 2)
        plan.same_pairs.append((a, b))
        first, second = rng.sample(labels, 2)
        plan.different_pairs.append((rng.choice(characters[first]), rng.choice(characters[second])))
    return plan


# ----------------------------------------------------------------------------------- the server


class ServerProcess:
    """`twinsearch serve` as a subprocess on a free port of 127.0.0.1 over a temporary data folder."""

    def __init__(self, data_dir: Path, model: Path | None, log_path: Path):
        command = [sys.executable, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(data_dir),
                   "--address", "127.0.0.1:0"]
        if model is not None:
            command += ["--model", str(model)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSEARCH_")}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.address: str | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            self._lines.append(line)
            if line.startswith("twinsearch serving on "):
                self.address = line.rsplit(" ", 1)[-1]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> str:
        if self._ready.wait(timeout) and self.address is not None:
            return self.address
        status = self.process.poll()
        if status is None:
            self.process.kill()
            raise RuntimeError(f"`twinsearch serve` did not come up within {timeout:.0f} s; its log:\n{self.tail()}")
        raise RuntimeError(f"`twinsearch serve` exited with status {status}; its log:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"  {line}" for line in text[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a clean exit (SIGKILL after `timeout`); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# -------------------------------------------------------------------------------------- the run


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def open_set_table(points, known_records, unknown_records) -> list[dict]:
    """Open-set identification at each calibrated operating point of the model.

    The server decides "known" when the best class distance is <= the threshold, so the decision at
    another threshold follows from the same answers (candidates[0].distance): no extra calls.
    """
    rows = []
    for point in points:
        def decide(result, threshold=point.distance):
            best = result.candidates[0] if result.candidates else None
            return best.label if best is not None and best.distance <= threshold else None

        rows.append({
            "point": point.name, "threshold": point.distance,
            "right": float(np.mean([decide(r) == s.label for s, r in known_records])),
            "known_rejected": float(np.mean([decide(r) is None for s, r in known_records])),
            "unknown_rejected": float(np.mean([decide(r) is None for s, r in unknown_records]))
            if unknown_records else float("nan"),
        })
    return rows


def within_alphabet(client, plan: Plan, seed: int) -> tuple[int, float]:
    """The classic one-shot task: each probe against its own character and up to WAYS - 1 other enrolled
    characters of the same alphabet (identify restricted with `labels`). Returns (largest N, accuracy)."""
    rng = random.Random(seed + 1)
    by_alphabet: dict[str, list[str]] = defaultdict(list)
    for sample in plan.enrolled:
        by_alphabet[sample.label.split("/")[0]].append(sample.label)
    right, ways = [], 0
    for sample in plan.known_probes:
        others = [label for label in by_alphabet[sample.label.split("/")[0]] if label != sample.label]
        choice = [sample.label, *rng.sample(others, min(WAYS - 1, len(others)))]
        ways = max(ways, len(choice))
        result = client.identify(GALLERY, sample.data, k=1, labels=choice)
        right.append(result.candidates[0].label == sample.label)
    return ways, float(np.mean(right)) if right else float("nan")


def run_demo(client, plan: Plan, say, seed: int = 0) -> tuple[dict, list]:
    """Enroll, identify, verify through `client`; returns (summary, identification records)."""
    summary: dict = {"gallery_classes": plan.classes, "unknown_classes": plan.unknown_classes}
    client.create_gallery(GALLERY, index="exact", scoring="nearest")

    say(f"enrolling {len(plan.enrolled)} images, one per character (one-shot) ...")
    started = time.perf_counter()
    for start in range(0, len(plan.enrolled), 64):
        chunk = plan.enrolled[start:start + 64]
        client.enroll(GALLERY, [s.label for s in chunk], [s.data for s in chunk], ids=[s.key for s in chunk])
    seconds = time.perf_counter() - started
    summary["enrolled"] = len(plan.enrolled)
    summary["enroll_images_per_s"] = len(plan.enrolled) / seconds

    probes = [(s, True) for s in plan.known_probes] + [(s, False) for s in plan.unknown_probes]
    say(f"identifying {len(probes)} probes, one call each ({len(plan.known_probes)} of enrolled characters "
        f"by other drawers, {len(plan.unknown_probes)} of characters never enrolled) ...")
    records = []
    latencies: list[float] = []
    for sample, known in probes:
        t0 = time.perf_counter()
        result = client.identify(GALLERY, sample.data, k=5)
        latencies.append(time.perf_counter() - t0)
        records.append((sample, known, result))
    known_records = [(s, r) for s, known, r in records if known]
    unknown_records = [(s, r) for s, known, r in records if not known]
    top1 = [r.candidates[0].label == s.label for s, r in known_records]
    top5 = [s.label in {c.label for c in r.candidates} for s, r in known_records]
    accepted_right = [r.label == s.label for s, r in known_records]
    rejected_known = [r.label is None for s, r in known_records]
    rejected_unknown = [r.label is None for s, r in unknown_records]
    summary.update(
        one_shot_top1=float(np.mean(top1)), one_shot_top5=float(np.mean(top5)),
        open_set_accuracy=float(np.mean(accepted_right)), known_rejected=float(np.mean(rejected_known)),
        unknown_rejection=float(np.mean(rejected_unknown)) if rejected_unknown else float("nan"),
        identify_p50_ms=percentile_ms(latencies, 50), identify_p99_ms=percentile_ms(latencies, 99),
        known_probes=len(known_records), unknown_probes=len(unknown_records),
        threshold=records[0][2].threshold.distance if records else float("nan"),
        threshold_source=records[0][2].threshold.source.value if records else "",
    )

    summary["open_set"] = open_set_table(client.info().model.thresholds, known_records, unknown_records)

    say(f"one-shot {WAYS}-way within each alphabet (Koch et al.): {len(plan.known_probes)} more calls ...")
    summary["within_alphabet_ways"], summary["within_alphabet_top1"] = within_alphabet(client, plan, seed)

    pairs = [(a, b, True) for a, b in plan.same_pairs] + [(a, b, False) for a, b in plan.different_pairs]
    say(f"verifying {len(pairs)} pairs, one call each ({len(plan.same_pairs)} same, "
        f"{len(plan.different_pairs)} different) ...")
    latencies = []
    correct, genuine_ok, impostor_ok = [], [], []
    for a, b, same in pairs:
        t0 = time.perf_counter()
        v = client.verify(a.data, b.data)
        latencies.append(time.perf_counter() - t0)
        correct.append(v.same == same)
        (genuine_ok if same else impostor_ok).append(v.same == same)
    summary.update(
        verification_accuracy=float(np.mean(correct)), verification_tar=float(np.mean(genuine_ok)),
        verification_far=1.0 - float(np.mean(impostor_ok)), pairs=len(pairs),
        verify_p50_ms=percentile_ms(latencies, 50), verify_p99_ms=percentile_ms(latencies, 99),
    )
    return summary, records


def montage_tiles(plan: Plan, records: list, count: int = 36, seed: int = 0):
    """A sample of probes for the montage: mostly enrolled characters, some never enrolled, right and
    wrong answers in the same proportions as over all probes (a stratified draw, so the picture
    neither flatters nor slanders the run)."""
    from twinsearch.client.montage import Tile

    exemplar = {s.label: s.data for s in plan.enrolled}
    rng = random.Random(seed)

    def is_right(record) -> bool:
        sample, known, result = record
        return result.label == sample.label if known else result.label is None

    def stratified(group: list, n: int) -> list:
        n = min(n, len(group))
        right = [r for r in group if is_right(r)]
        wrong = [r for r in group if not is_right(r)]
        n_right = min(len(right), round(n * len(right) / len(group))) if group else 0
        n_wrong = min(len(wrong), n - n_right)
        return rng.sample(right, n_right) + rng.sample(wrong, n_wrong)

    n_unknown = count // 6
    chosen = stratified([r for r in records if r[1]], count - n_unknown)
    rng.shuffle(chosen)
    chosen += stratified([r for r in records if not r[1]], n_unknown)
    tiles = []
    for record in chosen:
        sample, is_known, result = record
        predicted = result.label
        right = is_right(record)
        truth = sample.label.replace("Japanese_(katakana)", "Katakana")
        said = (predicted or "unknown").replace("Japanese_(katakana)", "Katakana")
        d = result.candidates[0].distance if result.candidates else float("nan")
        caption = f"{said} d={d:.2f}\ntrue {truth if is_known else 'not enrolled'}"
        tiles.append(Tile(sample.data, exemplar.get(predicted) if predicted else None, caption, right))
    return tiles


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
        server = ServerProcess(Path(tmp) / "data", args.model, Path(tmp) / "server.log")
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
            if server.process.poll() is None:
                say("stopping the server (SIGTERM) ...")
            exit_code = server.stop()
    seconds = time.perf_counter() - started
    summary.update(seconds=seconds, server_exit=exit_code, montage=str(path),
                   model=info.model.name, fingerprint=info.model.fingerprint)
    print_summary(summary, info, seconds, exit_code, path)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if exit_code == 0 else 1
