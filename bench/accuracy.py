"""End-to-end accuracy: the evaluation episodes and pairs run through a server and the client, compared
with what `twinsearch evaluate` reports in-process for the same model, data and seed.

Every image is embedded once by the server (Embed), so that the figures cost one forward pass per
image; the decisions are the server's (Enroll, Identify, Verify) on those vectors.

One-shot (Omniglot, the held-out alphabets, 20-way 1-shot within an alphabet): every image's vector is
enrolled once under its own label ("img-<n>"); each episode's queries (their server embeddings) go in one
Identify call restricted (`labels=`) to the episode's support images, k = way, nearest-exemplar
scoring, and the answer is the first candidate. With one shot the nearest support image is the
nearest prototype, which is what `evaluate` computes. Episodes come from the encoder's own
`EpisodeSampler` with the same arguments.

Verification (Fashion-MNIST test split): the encoder's classic pairs (`classic_pairs`, seed 0); the
10,000 images are embedded by the server (raw 28 x 28 arrays in Embed calls of 256), and each pair's
two vectors go in Verify calls of 256 pairs, decided at the server's default threshold (the model
card's EER point, which `evaluate` uses too). Accuracy = decisions that match the pair's truth.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common import FASHION_DIR, HELD_OUT, OMNIGLOT_ZIP, BenchError

log = logging.getLogger("bench")

WAY = 20
GALLERY = "oneshot-eval"


def evaluate_cli(model: Path, args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "twinsearch.client.cli", "evaluate", "--model", str(model), *args,
           "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"twinsearch evaluate failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def embed_all(client, images: list) -> np.ndarray:
    """Server embeddings of `images` (bytes or arrays), in Embed calls of 256: float32 (n, dim)."""
    return np.concatenate([client.embed(images[s:s + 256]) for s in range(0, len(images), 256)])


def oneshot(address: str, model: Path, work: Path, episodes: int) -> dict:
    from twinsearch.client import Client
    from twinsearch.encoder.data import open_source
    from twinsearch.encoder.samplers import EpisodeSampler

    args = ["--data", str(OMNIGLOT_ZIP), "--class-depth", "2", "--groups", *HELD_OUT, "--way", str(WAY),
            "--shot", "1", "--within-group", "--episodes", str(episodes), "--seed", "0"]
    log.info("accuracy: twinsearch evaluate (Omniglot, %d episodes)", episodes)
    report = evaluate_cli(model, args, work / "evaluate-omniglot.json")

    source = open_source(OMNIGLOT_ZIP, 2).select_groups(list(HELD_OUT))
    raw = [b for _, b in source.iter_raw()]
    group_names = list(dict.fromkeys(source.groups))
    class_groups = np.array([group_names.index(g) for g in source.groups], dtype=np.int64)
    sampler = EpisodeSampler(source.labels, WAY, 1, 1, episodes, class_groups, True, 0)
    accs = []
    log.info("accuracy: %d Omniglot images enrolled, %d episodes identified through the server", len(raw), episodes)
    with Client(address, timeout=600.0) as c:
        c.create_gallery(GALLERY, exist_ok=True)
        vectors = embed_all(c, raw)
        for s in range(0, len(raw), 128):
            idx = range(s, min(len(raw), s + 128))
            c.enroll(GALLERY, [f"img-{i}" for i in idx], [vectors[i] for i in idx], ids=[f"img-{i}" for i in idx])
        for support, queries in sampler:
            labels = [f"img-{int(i)}" for i in support[:, 0]]
            found = c.identify(GALLERY, [vectors[int(i)] for i in queries[:, 0]], k=len(labels), labels=labels,
                               scoring="nearest")
            predicted = [labels.index(r.candidates[0].label) for r in found]
            accs.append(float(np.mean(np.array(predicted) == np.arange(len(labels)))))
    e2e = float(np.mean(accs))
    inproc = float(report["oneshot"]["accuracy"])
    return {"oneshot": {"episodes": episodes, "way": WAY, "data": "Omniglot held-out: " + ", ".join(HELD_OUT),
                        "e2e": e2e, "inprocess": inproc, "equal": abs(e2e - inproc) < 1e-9,
                        "evaluate_args": " ".join(args)},
            "oneshot_accuracy_e2e": round(e2e, 4), "oneshot_accuracy_inprocess": round(inproc, 4)}


def pairs(address: str, model: Path, work: Path) -> dict:
    from twinsearch.client import Client
    from twinsearch.encoder.data import open_source
    from twinsearch.encoder.samplers import classic_pairs

    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        from bench.common import FASHION_HELP

        raise BenchError(FASHION_HELP.format(dir=FASHION_DIR))
    args = ["--data", str(FASHION_DIR), "--split", "test", "--seed", "0"]
    log.info("accuracy: twinsearch evaluate (Fashion-MNIST test)")
    report = evaluate_cli(model, args, work / "evaluate-fashion.json")
    source = open_source(FASHION_DIR, 1, "test")
    a, b, y = classic_pairs(source.labels, 0)
    images = source.arrays
    threshold = None if report["pairs"]["threshold_source"] != "eer_on_these_pairs" else report["pairs"]["threshold"]
    same = np.empty(len(a), dtype=bool)
    log.info("accuracy: %d Fashion-MNIST pairs verified through the server", len(a))
    with Client(address, timeout=600.0) as c:
        vectors = embed_all(c, list(images))
        for s in range(0, len(a), 256):
            res = c.verify([vectors[i] for i in a[s:s + 256]], [vectors[i] for i in b[s:s + 256]],
                           threshold=threshold)
            same[s:s + len(res)] = [r.same for r in res]
    e2e = float(np.mean(same == (y == 1)))
    inproc = float(report["pairs"]["accuracy"])
    return {"verify_pairs": {"pairs": int(len(a)), "data": "Fashion-MNIST test split, classic pairs, seed 0",
                             "threshold": report["pairs"]["threshold"],
                             "threshold_source": report["pairs"]["threshold_source"],
                             "e2e": e2e, "inprocess": inproc, "equal": abs(e2e - inproc) < 1e-9},
            "verify_accuracy_e2e": round(e2e, 4), "verify_accuracy_inprocess": round(inproc, 4)}


def run(address: str, model: Path, work: Path, episodes: int) -> dict:
    return {**oneshot(address, model, work, episodes), **pairs(address, model, work)}
