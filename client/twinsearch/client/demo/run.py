"""What the demo does through the client, and the figures it reports.

`run_demo` enrolls the plan's one-shot gallery, identifies every probe and verifies every pair, one
call each (so the latencies are per call), and returns the summary figures with the raw answers;
`open_set_table`, `within_alphabet` and `montage_tiles` derive the rest. Works with a `Client` or a
`LocalClient`.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import numpy as np

from twinsearch.client.demo.plan import Plan

GALLERY = "omniglot-oneshot"
WAYS = 20  # the classic one-shot task: 20-way within an alphabet (Koch et al. 2015)


def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-th percentile of `values` (seconds) in ms; None when there are none (nothing was measured)."""
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else None


def mean(values: list) -> float | None:
    """The mean of `values`, or None when there are none: a figure not measured, not NaN."""
    return float(np.mean(values)) if len(values) else None


def open_set_table(points, known_records, unknown_records) -> list[dict]:
    """Open-set identification at each calibrated operating point of the model ("unknown_rejected": None
    when no character was kept out of the gallery).

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
            "right": mean([decide(r) == s.label for s, r in known_records]),
            "known_rejected": mean([decide(r) is None for s, r in known_records]),
            "unknown_rejected": mean([decide(r) is None for s, r in unknown_records]),
        })
    return rows


def within_alphabet(client, plan: Plan, seed: int) -> tuple[int, float | None]:
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
    return ways, mean(right)


def run_demo(client, plan: Plan, say, seed: int = 0) -> tuple[dict, list]:
    """Enroll, identify, verify through `client`; returns (summary, identification records). A figure with
    nothing to measure (unknown rejection with no character kept out, verification with no pairs) is None."""
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
        one_shot_top1=mean(top1), one_shot_top5=mean(top5),
        open_set_accuracy=mean(accepted_right), known_rejected=mean(rejected_known),
        unknown_rejection=mean(rejected_unknown),
        identify_p50_ms=percentile_ms(latencies, 50), identify_p99_ms=percentile_ms(latencies, 99),
        known_probes=len(known_records), unknown_probes=len(unknown_records),
        threshold=records[0][2].threshold.distance if records else None,
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
        verification_accuracy=mean(correct), verification_tar=mean(genuine_ok),
        verification_far=None if not impostor_ok else 1.0 - mean(impostor_ok), pairs=len(pairs),
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
