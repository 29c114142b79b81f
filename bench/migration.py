"""Migrating a gallery to another model: throughput, identify latency meanwhile, and what kept images cost.

    PYTHONPATH=proto:encoder:server:client python -m bench.migration [--images 4000] [--repeats 3]
        [--seconds 8] [--migration-batch N] [--json bench/results/migration.json]

One `twinsearch serve` subprocess per repeat holds two models: `characters` (the shipped Omniglot model)
and `characters-v2` (the same network with every weight perturbed by seeded noise of 1% of its
tensor's standard deviation: another fingerprint, the same cost per image, standing in for a retrained
model). Per repeat, through `Client` from this process:

1. kept-image cost: the same Omniglot background images (105 x 105 PNG, distinct) enrolled in batches
   of 32 into a gallery that keeps its images and one that does not, batch by batch in alternating
   order (so that the machine's drift falls on both alike); the difference in wall time per image, and
   the kept images' bytes and the database pages they take per image. Beside it, in this process, the
   write itself: `Database.put_images` of the same images in batches of 32 into a database of its own,
   one transaction each, committed with synchronous=FULL as the server does;
2. identify latency without a migration: one client, one probe image per call, back to back, for
   `--seconds`, against the gallery that keeps its images (p50, p99);
3. migration: `migrate_gallery` to characters-v2; throughput is the images divided by the time from
   the call to the switch (polling GetGallery every 0.1 s); the same identify loop runs meanwhile.

The machine's load average is recorded before and after each repeat: the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from bench.common import REPO, machine, percentiles
from twinsearch.client import Client
from twinsearch.client.server_process import ServerProcess

ZIPS = sorted((REPO / "data" / "omniglot").glob("images_background_small*.zip"))
BATCH = 32
CODE = {"PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("proto", "encoder", "server", "client"))}


def omniglot_images() -> list[tuple[str, bytes]]:
    """(class label, PNG bytes) of every background image shipped with the repository, in name order."""
    out = []
    for path in ZIPS:
        with zipfile.ZipFile(path) as zf:
            for name in sorted(n for n in zf.namelist() if n.endswith(".png")):
                out.append(("/".join(name.split("/")[-3:-1]), zf.read(name)))
    return out


def perturbed_model(out: Path) -> Path:
    """The shipped Omniglot model with each weight tensor perturbed by 1% of its standard deviation."""
    import torch

    from twinsearch.encoder.model import EncoderModel, load_model

    base = load_model("omniglot")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in base.net.parameters():
            if p.numel() > 1:
                p.add_(torch.randn_like(p) * 0.01 * p.std())
    EncoderModel.create(base.net, base.card.architecture, base.preprocess, "characters-v2",
                        calibration=base.card.calibration).save(out)
    return out


def enroll_paired(client: Client, galleries: tuple[str, str], items: list[tuple[str, bytes]]) -> dict[str, float]:
    """Seconds each gallery's enrollments of `items` took, batch by batch, the order alternating."""
    spent = dict.fromkeys(galleries, 0.0)
    for b, s in enumerate(range(0, len(items), BATCH)):
        part = items[s:s + BATCH]
        for gallery in (galleries if b % 2 == 0 else galleries[::-1]):
            started = time.perf_counter()
            client.enroll(gallery, [label for label, _ in part], [png for _, png in part],
                          ids=[f"{gallery}-{s + i}" for i in range(len(part))])
            spent[gallery] += time.perf_counter() - started
    return spent


def image_write_ms(items: list[tuple[str, bytes]], folder: Path) -> float:
    """Milliseconds per image of `Database.put_images` (one transaction per batch of BATCH, committed
    with synchronous=FULL as the server does), less the same transactions without the images."""
    from twinsearch.server.database import Database

    folder.mkdir(parents=True)
    db = Database(folder / "images.sqlite3", synchronous="FULL")
    try:
        def timed(put: bool) -> float:
            started = time.perf_counter()
            for s in range(0, len(items), BATCH):
                with db.transaction() as conn:
                    conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
                    if put:
                        db.put_images(conn, [png for _, png in items[s:s + BATCH]])
            return time.perf_counter() - started

        elapsed = timed(True) - timed(False)
    finally:
        db.close()
        shutil.rmtree(folder, ignore_errors=True)
    return elapsed / len(items) * 1000


def identify_loop(client: Client, gallery: str, probes: list[bytes], until) -> list[float]:
    latencies, i = [], 0
    while not until():
        started = time.perf_counter()
        client.identify(gallery, probes[i % len(probes)], k=5)
        latencies.append(time.perf_counter() - started)
        i += 1
    return latencies


def kept_bytes(database: Path) -> tuple[int, int]:
    """(bytes of the kept images, bytes of the database pages that hold them and their key index; 0 where
    SQLite was built without its `dbstat` table)."""
    conn = sqlite3.connect(database)
    try:
        (size,) = conn.execute("SELECT coalesce(sum(length(data)), 0) FROM images").fetchone()
        try:
            (pages,) = conn.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat "
                                    "WHERE name IN ('images', 'sqlite_autoindex_images_1')").fetchone()
        except sqlite3.OperationalError:  # no dbstat in this SQLite
            pages = 0
    finally:
        conn.close()
    return int(size), int(pages)


def one_repeat(r: int, items, probes, v2: Path, seconds: float, work: Path, batch: int | None) -> dict:
    data = work / f"data-{r}"
    load_before = os.getloadavg()
    server = ServerProcess.start(data, None, env=CODE, timeout_s=300.0, stop_timeout_s=120.0, flags=(
        "--model", "characters=omniglot", "--model", f"characters-v2={v2}",
        *(("--migration-batch", str(batch)) if batch else ())))
    try:
        with Client(server.address, timeout=120.0) as client:
            client.create_gallery("kept", keep_images=True)
            client.create_gallery("plain", keep_images=False)
            enroll_s = enroll_paired(client, ("kept", "plain") if r % 2 == 0 else ("plain", "kept"), items)
            file_bytes, allocated = kept_bytes(data / "gallery.sqlite3")

            end = time.monotonic() + seconds
            idle = identify_loop(client, "kept", probes, lambda: time.monotonic() >= end)

            done = threading.Event()
            started = time.perf_counter()
            client.migrate_gallery("kept", "characters-v2")

            failed: list[BaseException] = []

            def watch():
                try:
                    with Client(server.address, timeout=60.0) as watcher:
                        while watcher.get_gallery("kept").migration is not None:
                            time.sleep(0.1)
                except BaseException as exc:  # noqa: BLE001 - raised below, after the loop ends
                    failed.append(exc)
                finally:
                    done.set()

            watcher = threading.Thread(target=watch)
            watcher.start()
            during = identify_loop(client, "kept", probes, done.is_set)
            migration_s = time.perf_counter() - started
            watcher.join()
            if failed:
                raise failed[0]
            assert client.get_gallery("kept").model == "characters-v2"
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    n = len(items)
    return {
        "repeat": r,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "enroll_images_per_s_kept": round(n / enroll_s["kept"], 1),
        "enroll_images_per_s_plain": round(n / enroll_s["plain"], 1),
        "kept_cost_ms_per_image": round((enroll_s["kept"] - enroll_s["plain"]) / n * 1000, 3),
        "kept_bytes_per_image": round(file_bytes / n),
        "kept_disk_bytes_per_image": round(allocated / n),
        "image_write_ms_per_image": round(image_write_ms(items, work / f"images-{r}"), 3),
        "identify_idle": {**percentiles(idle), "calls": len(idle)},
        "identify_during_migration": {**percentiles(during), "calls": len(during)},
        "migration_seconds": round(migration_s, 2),
        "migration_images_per_s": round(n / migration_s, 1),
    }


def spread(rows: list[dict], key, sub=None) -> dict:
    values = [row[key][sub] if sub else row[key] for row in rows]
    return {"median": float(np.median(values)), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="images in the migrated gallery")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="identify loop without a migration")
    parser.add_argument("--migration-batch", type=int, default=None,
                        help="the server's --migration-batch (default: the server's default)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "migration.json")
    args = parser.parse_args()
    images = omniglot_images()
    items, probes = images[:args.images], [png for _, png in images[args.images:args.images + 200]]
    if len(items) < args.images or not probes:
        raise SystemExit(f"only {len(images)} images in {', '.join(map(str, ZIPS))}")
    with tempfile.TemporaryDirectory(prefix="twinsearch-migration-") as tmp:
        work = Path(tmp)
        v2 = perturbed_model(work / "characters-v2.tsm")
        rows = []
        for r in range(args.repeats):
            rows.append(one_repeat(r, items, probes, v2, args.seconds, work, args.migration_batch))
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        "migration_images_per_s": spread(rows, "migration_images_per_s"),
        "identify_p50_ms_idle": spread(rows, "identify_idle", "p50_ms"),
        "identify_p50_ms_during_migration": spread(rows, "identify_during_migration", "p50_ms"),
        "identify_p99_ms_idle": spread(rows, "identify_idle", "p99_ms"),
        "identify_p99_ms_during_migration": spread(rows, "identify_during_migration", "p99_ms"),
        "kept_cost_ms_per_image": spread(rows, "kept_cost_ms_per_image"),
        "kept_disk_bytes_per_image": spread(rows, "kept_disk_bytes_per_image"),
        "image_write_ms_per_image": spread(rows, "image_write_ms_per_image"),
        "enroll_images_per_s_kept": spread(rows, "enroll_images_per_s_kept"),
        "enroll_images_per_s_plain": spread(rows, "enroll_images_per_s_plain"),
    }
    report = {"machine": machine(), "images": args.images, "repeats": rows, "summary": summary,
              "command": f"python -m bench.migration --images {args.images} --repeats {args.repeats} "
                         f"--seconds {args.seconds:g}"
                         + (f" --migration-batch {args.migration_batch}" if args.migration_batch else "")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
