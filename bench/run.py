"""`make bench`: twinsearch against its limits, the library it wraps and a peer; JSON and a markdown table.

    .venv/bin/python -m bench.run                 # full size (1M x 128 gallery, 70,000 images): < 20 min on 2 cores
    .venv/bin/python -m bench.run --quick         # small sizes, a few minutes
    .venv/bin/python -m bench.run --only gallery  # some sections: encoder, latency, bulk, accuracy, gallery, ray
    .venv/bin/python -m bench.run --model FILE    # another model than the one shipped in the package

Every figure that can be a ratio is one, both sides measured in the same run (absolute times drift on a
shared machine). Sections:

- encoder (`bench.encoder`): server Embed from 16 clients over the model in-process at its best batch
  size (`encoder_ratio`: the median of three server passes, each over the in-process passes before and
  after it; both sides warm, the server's first pass kept as its own figure); Verify
  latency, one pair per call (`verify_p50_ms`, `verify_p99_ms`).
- latency (`bench.latency`): one client, one call at a time, on its own server: Verify of one pair of
  images (`verify_one_client_p50_ms`) and Identify of one image against a 100,000-item gallery
  (`identify_100k_one_client_p50_ms`), each with the server's per-stage breakdown, and the floor of a
  Verify on this machine (`verify_floor_ms`: a pair's forward pass in-process plus a call that does no
  work).
- bulk (`bench.bulk`): Fashion-MNIST's 70,000 images through `twinsearch index` over the in-process
  encoder on the same files (`bulk_index_images_per_s`, `bulk_index_ratio`).
- accuracy (`bench.accuracy`): the Omniglot one-shot episodes and Fashion-MNIST pairs through a server,
  against `twinsearch evaluate` in-process (`oneshot_accuracy_e2e`, `verify_accuracy_e2e`).
- ray (`bench.ray_bench`): `twinsearch embed` on a local Ray instance over the same 70,000 images
  against the in-process encoder (`bulk_ray_ratio`), and Embed from 16 clients against `serve
  --encoders ray` with two replicas over local encoding (`serve_ray_ratio`).
- gallery (`bench.gallery`): 1M x 128 vectors, 100,000 classes: identify QPS and latency from 32
  clients over in-process FAISS (`identify_*`), IVF against exact (`ann_*`), start-up time and memory
  (`startup_s_1m`, `rss_mb_1m`), and LanceDB as the peer (`peer_*`).

Writes bench/results/latest.json and a dated copy (quick runs: quick-latest.json and a dated quick
copy, which git ignores; runs of some sections, `--only`: a dated copy named after them, such as
latency-2026-12-03T2150Z.json, and latest.json is left alone), and prints the table. Needs
Fashion-MNIST (`apt-get install -y dataset-fashion-mnist`, or TWINSEARCH_FASHION_MNIST=folder) and, for
the peer, `pip install lancedb`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import BenchError, machine, model_path, omniglot_pngs, start_server, write_json
from twinsearch.client.server_process import ServerProcess

log = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("encoder", "latency", "bulk", "accuracy", "gallery", "ray")

SIZES = {
    "full": {"n": 1_000_000, "classes": 100_000, "probes": 1024, "ann_probes": 4096, "recall_probes": 1000,
             "nlist": 1024, "nprobe": 32, "peer_budget_s": 60, "encoder_images": 2048, "verify_calls": 300,
             "bulk_images": 70_000, "bulk_inprocess_images": 5_000, "episodes": 400, "one_client_calls": 30},
    "quick": {"n": 100_000, "classes": 10_000, "probes": 1024, "ann_probes": 2048, "recall_probes": 256,
              "nlist": 256, "nprobe": 16, "peer_budget_s": 15, "encoder_images": 512, "verify_calls": 100,
              "bulk_images": 5_000, "bulk_inprocess_images": 2_000, "episodes": 100, "one_client_calls": 30},
}

# key, unit, target (a predicate and its text), in table order
ROWS = [
    ("encoder_ratio", "", lambda v: v >= 0.9, ">= 0.9"),
    ("encoder_server_images_per_s", "img/s", None, ""),
    ("encoder_server_first_pass_images_per_s", "img/s", None, ""),
    ("encoder_inprocess_images_per_s", "img/s", None, ""),
    ("encoder_inprocess_forward_only_images_per_s", "img/s", None, ""),
    ("identify_qps", "q/s", None, ""),
    ("identify_p50_ms", "ms", lambda v: v <= 250, "<= 250"),
    ("identify_p99_ms", "ms", None, ""),
    ("identify_one_client_p50_ms", "ms", None, ""),
    ("identify_inprocess_qps", "q/s", None, ""),
    ("identify_ratio", "", lambda v: v >= 0.9, ">= 0.9"),
    ("ann_recall_at_10", "", lambda v: v >= 0.95, ">= 0.95"),
    ("ann_qps_ratio", "x", lambda v: v >= 5, ">= 5"),
    ("bulk_index_images_per_s", "img/s", None, ""),
    ("bulk_index_inprocess_images_per_s", "img/s", None, ""),
    ("bulk_index_ratio", "", lambda v: v >= 0.9, ">= 0.9"),
    ("bulk_ray_images_per_s", "img/s", None, ""),
    ("bulk_ray_inprocess_images_per_s", "img/s", None, ""),
    ("bulk_ray_ratio", "", lambda v: v >= 0.8, ">= 0.8"),
    ("serve_ray_images_per_s", "img/s", None, ""),
    ("serve_local_images_per_s", "img/s", None, ""),
    ("serve_ray_ratio", "", None, ""),
    ("verify_p50_ms", "ms", None, ""),
    ("verify_p99_ms", "ms", None, ""),
    ("verify_one_client_p50_ms", "ms", lambda v: v <= 3, "<= 3"),
    ("verify_one_client_p99_ms", "ms", None, ""),
    ("verify_floor_ms", "ms", None, ""),
    ("verify_spaced_p50_ms", "ms", None, ""),
    ("verify_spaced_p99_ms", "ms", None, ""),
    ("identify_100k_one_client_p50_ms", "ms", lambda v: v <= 5, "<= 5"),
    ("identify_100k_one_client_p99_ms", "ms", None, ""),
    ("verify_class_100k_one_client_p50_ms", "ms", None, ""),
    ("verify_class_cohort_100k_one_client_p50_ms", "ms", None, ""),
    ("startup_s_1m", "s", None, ""),
    ("startup_s_empty", "s", None, ""),
    ("rss_mb_1m", "MiB", None, ""),
    ("rss_mb_empty", "MiB", None, ""),
    ("peer_qps_ratio", "x", lambda v: v >= 1, "> 1 (ours faster)"),
    ("peer_recall", "", None, ""),
    ("oneshot_accuracy_e2e", "", None, "= in-process"),
    ("oneshot_accuracy_inprocess", "", None, ""),
    ("verify_accuracy_e2e", "", None, "= in-process"),
    ("verify_accuracy_inprocess", "", None, ""),
]
KEYS = [r[0] for r in ROWS]


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB RAM, GPU: {m['gpu']}; "
             f"load average {m['load_average_at_start'][0]} at the start, {result['load_average_at_end'][0]} "
             f"at the end; {result['date']}, {'quick' if result['quick'] else 'full'} size, "
             f"{result['elapsed_s'] / 60:.1f} min.", "",
             "| figure | value | target | met |", "| --- | ---: | --- | :---: |"]
    for key, unit, ok, text in ROWS:
        v = result.get(key)
        if v is None:
            shown, met = "not measured", ""
        else:
            shown = f"{v:g} {unit}".strip() if isinstance(v, (int, float)) else str(v)
            met = ("yes" if ok(v) else "**no**") if ok is not None else ""
            if key.endswith("_e2e"):
                other = result.get(key.replace("_e2e", "_inprocess"))
                met = "yes" if other is not None and abs(v - other) < 1e-9 else "**no**"
        lines.append(f"| `{key}` | {shown} | {text} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes); the default is the full size")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                    help=f"run only these sections ({', '.join(SECTIONS)})")
    ap.add_argument("--model", help="model file (default: the model shipped in the package)")
    ap.add_argument("--peer", choices=("ivf_flat", "none"), default="ivf_flat",
                    help="peer index: ivf_flat (LanceDB's IVF_FLAT with our cell count, 3 nprobe values; default) "
                         "or none (its exhaustive search, recall 1.0)")
    ap.add_argument("--no-peer", action="store_true", help="skip the peer comparison")
    ap.add_argument("--gallery-n", type=int, metavar="N",
                    help="gallery size instead of the preset's (N/10 classes; IVF cells and probes as the full size)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("twinsearch", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    size_name = "quick" if args.quick else "full"
    size = dict(SIZES[size_name])
    if args.gallery_n:
        size.update(n=args.gallery_n, classes=max(1, args.gallery_n // 10), nlist=SIZES["full"]["nlist"],
                    nprobe=SIZES["full"]["nprobe"])
    started = time.time()
    try:
        model_file = model_path(args.model)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    import torch

    from twinsearch.encoder.model import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(model_file, device="cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="twinsearch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": machine(),
        "sizes": size,
        "model": {"path": str(model_file), "name": model.name, "fingerprint": model.fingerprint, "dim": model.dim,
                  "input": list(model.preprocess.shape), "runtime": model.runtime},
        **{k: None for k in KEYS},
        "sections": {},
        "errors": {},
    }
    failed = False
    try:
        image_sections = [s for s in ("encoder", "bulk", "accuracy") if s in args.only]
        if image_sections:
            shutil.rmtree(work / "images-server", ignore_errors=True)
            with start_server(work / "images-server", model_file) as srv:
                result["image_server"] = {"startup_s": round(srv.startup_s, 2), "rss_mb_at_start": round(srv.rss_mb(), 1)}
                for section in image_sections:
                    failed |= _section(result, section, lambda s=section: _image_section(s, srv, model, model_file,
                                                                                         size, work, result))
                result["image_server"]["rss_mb_at_end"] = round(srv.rss_mb(), 1)
        if "latency" in args.only:
            from bench import latency

            failed |= _section(result, "latency", lambda: latency.run(model_file, model.fingerprint, model.dim,
                                                                     work, size["verify_calls"]))
        if "ray" in args.only:
            from bench import ray_bench

            batch = result["sections"].get("encoder", {}).get("encoder_inprocess", {}).get("best_batch", 256)
            failed |= _section(result, "ray", lambda: ray_bench.run(model, model_file, work / "ray", size, batch))
        if "gallery" in args.only:
            from bench import gallery

            if model.dim != 128:
                log.warning("the model's embeddings are %d-d: the gallery section uses that dimension", model.dim)
            peer = "skip" if args.no_peer else args.peer
            failed |= _section(result, "gallery", lambda: gallery.run(size, model_file, model.fingerprint, model.dim,
                                                                     work / "gallery", peer))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = round(time.time() - started, 1)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = table(result)
    result["table"] = text
    stamp = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime(started))
    prefix = "quick-" if args.quick else ""
    written = []
    if set(args.only) == set(SECTIONS):  # latest.json is the latest run of every section
        written.append(args.out / f"{prefix}latest.json")
    else:
        prefix += "-".join(s for s in SECTIONS if s in args.only) + "-"
    dated = args.out / f"{prefix}{stamp}.json"
    for suffix in "bcdefghijklmnopqrstuvwxyz":  # another run in the same minute keeps its own file
        if not dated.exists():
            break
        dated = args.out / f"{prefix}{stamp}-{suffix}.json"
    written.append(dated)
    for path in written:
        write_json(path, result)
    print(text)
    print(f"\nwritten: {' and '.join(str(p) for p in written)}")
    return 1 if failed else 0


def _image_section(section: str, srv: ServerProcess, model, model_file: Path, size: dict, work: Path,
                   result: dict) -> dict:
    if section == "encoder":
        from bench import encoder

        images = omniglot_pngs(size["encoder_images"])
        return encoder.run(srv.address, model, images, size["verify_calls"])
    if section == "bulk":
        from bench import bulk

        # The in-process side at the encoder's best batch size when that section ran.
        batch = result["sections"].get("encoder", {}).get("encoder_inprocess", {}).get("best_batch", 256)
        return bulk.run(srv.address, model, work, size["bulk_images"], size["bulk_inprocess_images"], batch)
    from bench import accuracy

    return accuracy.run(srv.address, model_file, work, size["episodes"])


def _section(result: dict, name: str, fn) -> bool:
    """Run one section; its figures go to the top level, its details under sections[name]. True if it failed."""
    t0 = time.time()
    load0 = os.getloadavg()[0]
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - one failed section does not lose the others
        log.error("section %s failed: %s", name, exc)
        result["errors"][name] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, BenchError):
            result["errors"][name] += "\n" + traceback.format_exc()
        return True
    for key in KEYS:
        if key in out:
            result[key] = out[key]
    result["sections"][name] = {**out, "seconds": round(time.time() - t0, 1),
                                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    log.info("section %s done in %.0f s", name, time.time() - t0)
    return False


if __name__ == "__main__":
    sys.exit(main())
