"""Bulk embedding on Ray Data: read -> decode and preprocess (CPU tasks) -> encoder replicas -> vectors.

    with ray_session(RaySettings()):
        for batch in embed_rows(listing.rows, ModelFile.load(None), EmbedSettings(encoders=2)):
            ...   # batch.client_ids, batch.vectors (n, dim) float32, batch.failures

The stages:

1. the rows of the source (`sources.list_source`) become a Ray dataset of file locations;
2. each file (or zip member) is read and the model's own `Preprocess` runs on it, with the server's
   pixel limit (`decode_batch`); an image that cannot be read or decoded becomes a row with its reason;
3. an actor pool of `EncoderReplica`s (one model each; one GPU each when the cluster has GPUs, else one
   CPU; `replica_count` of them unless told) embeds the preprocessed images;
4. the driver takes the batches as they finish and splits vectors from failures.

Where the cluster has GPUs, stage 2 runs in CPU tasks of its own, beside the forward passes on the GPUs;
on CPUs only it runs in the replicas (`DecodingReplica`), which share the cores with it anyway
(`decode_in_tasks`; `twinsearch embed --decode` chooses).

Ray Data restarts a replica that dies and runs its unfinished batches again elsewhere; a batch's
output reaches the driver once, so every row comes out exactly once. `embed_to_parquet` writes the
vectors into whole Parquet files (`twinsearch.client.vector_files`) and resumes: rows whose client id
a file of the folder already holds are not embedded again.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinsearch.client.bulk import IMAGE_EXTENSIONS, FileFailure
from twinsearch.client.errors import FailedPrecondition, InvalidArgument, TwinsearchError
from twinsearch.client.vector_files import (
    PATTERN,
    VectorBatch,
    VectorFileWriter,
    VectorsInfo,
    read_info,
    written_ids,
)

from ..settings import DEFAULT_MAX_PIXELS
from .runtime import RaySettings, cluster_gpus, on_this_node, ray_session, require_ray
from .sources import MANIFEST_SUFFIXES, Listing, SourceRow, list_source

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.jsonl"
DEFAULT_BATCH = 256
# Bytes of node memory a replica reserves: its process (torch), model and batches. Ray Data measured up
# to 754-769 MiB per replica of the shipped model at batches of 256 and 1,024 (439 MiB at 64) and warned
# on stderr that 512 MiB was too little (it asks for 1.25 times what it saw).
REPLICA_MEMORY = 1024 * 1024 * 1024


@dataclass(frozen=True)
class ModelFile:
    """A model file as the pipeline ships it: its bytes (sent to each replica) and its card's facts."""

    data: bytes
    name: str
    fingerprint: str
    dim: int
    preprocess: dict

    @classmethod
    def load(cls, model: str | Path | None) -> ModelFile:
        """A model file by path or shipped name (None: the default model), its weights checked as the
        replicas will load them: a corrupt file is one ModelFileError here, before Ray starts, rather than
        every replica dying in its constructor."""
        from twinsearch.encoder.card import read_card
        from twinsearch.encoder.model import read_weights, resolve_model_path

        path = resolve_model_path(model)
        card = read_card(path)  # ModelFileError for a missing or corrupt file
        read_weights(path)      # ModelFileError for corrupt weights, or weights that do not fit the card
        return cls(path.read_bytes(), card["name"], card["fingerprint"], int(card["dim"]), card["preprocess"])


DECODE_PLACES = ("auto", "tasks", "replicas")


@dataclass(frozen=True)
class EmbedSettings:
    """encoders: encoder replicas (actors; 0: `replica_count` chooses). batch: images per decode task
    and per forward pass.
    threads: torch threads per replica (0: the local machine's cores shared among the replicas when
    Ray runs locally, else what Ray assigns the actor). max_pixels: the largest image, as the server's.
    decode: where images are read and preprocessed: "tasks" (CPU tasks of their own), "replicas" (by
    the replicas themselves) or "auto" (tasks when the cluster has GPUs; see `decode_in_tasks`)."""

    encoders: int = 0
    batch: int = DEFAULT_BATCH
    threads: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode: str = "auto"

    def __post_init__(self) -> None:
        if self.decode not in DECODE_PLACES:
            raise InvalidArgument(f"decode must be one of {', '.join(DECODE_PLACES)}, got {self.decode!r}")
        for name in ("batch", "max_pixels"):
            if int(getattr(self, name)) < 1:
                raise InvalidArgument(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.encoders < 0:
            raise InvalidArgument(f"encoders must be >= 0 (0: as many as the cluster allows), got {self.encoders}")
        if self.threads < 0:
            raise InvalidArgument(f"threads must be >= 0, got {self.threads}")


DEFAULT_EMBED = EmbedSettings()
LOCAL_RAY = RaySettings()


# ---------------------------------------------------------------------- stage 2: decode (Ray tasks)
def decode_batch(batch: dict, preprocess: dict, max_pixels: int) -> dict:
    """Read and preprocess a batch of rows: adds "image" ((n, C, H, W) float32; zeros where it failed)
    and "error" ("" or the reason the image cannot be embedded)."""
    from twinsearch.encoder.errors import ImageError
    from twinsearch.encoder.preprocess import Preprocess

    pre = Preprocess.from_dict(preprocess)
    n = len(batch["client_id"])
    images = np.zeros((n, *pre.shape), dtype=np.float32)
    errors: list[str] = []
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for i in range(n):
            path, member = str(batch["path"][i]), str(batch["member"][i])
            try:
                if member:
                    if path not in archives:
                        archives[path] = zipfile.ZipFile(path)
                    data = archives[path].read(member)
                else:
                    with open(path, "rb") as f:
                        data = f.read()
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                errors.append(f"cannot read: {getattr(exc, 'strerror', None) or exc}")
                continue
            if not data:
                errors.append("empty file")
                continue
            try:
                images[i] = pre.load(data, max_pixels=max_pixels)
            except ImageError as exc:
                errors.append(str(exc))
                continue
            except (ValueError, TypeError, OSError, MemoryError) as exc:  # Pillow on hostile input
                errors.append(f"cannot read the image: {exc}")
                continue
            errors.append("")
    finally:
        for archive in archives.values():
            archive.close()
    out = {k: batch[k] for k in ("client_id", "label", "metadata", "relative")}
    out["image"] = images
    out["error"] = np.asarray(errors, dtype=object)
    return out


class DecodingReplica:
    """An `EncoderReplica` that reads and preprocesses its own batches (`decode_batch`), then embeds them.

    The pipeline's replicas on a cluster without GPUs: there decoding and the forward pass share the same
    cores anyway, and decode tasks of their own only add the trip of every preprocessed batch through
    the object store and processes that compete with the replicas for the cores."""

    def __init__(self, model_file: bytes, fingerprint: str, threads: int, preprocess: dict, max_pixels: int):
        from twinsearch.encoder.replica import EncoderReplica

        self.replica = EncoderReplica(model_file, fingerprint, threads=threads)
        self.preprocess, self.max_pixels = preprocess, max_pixels

    def __call__(self, batch: dict) -> dict:
        return self.replica(decode_batch(batch, self.preprocess, self.max_pixels))


# ---------------------------------------------------------------------- the pipeline
def embed_rows(rows: Sequence[SourceRow], model: ModelFile, settings: EmbedSettings | None = None
               ) -> Iterator[VectorBatch]:
    """Embed `rows` on the connected Ray cluster; yields batches as they finish (in no set order), each
    with its vectors and the failures among its rows. Every row comes out once."""
    ray = require_ray(data=True)
    from ray.data import ActorPoolStrategy, DataContext

    settings = settings or DEFAULT_EMBED

    from twinsearch.encoder.replica import EncoderReplica

    if not rows:
        return
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the command draws one bar of its own
    gpus = cluster_gpus(ray)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    in_tasks = decode_in_tasks(settings, gpus)
    encoders = replica_count(settings.encoders, gpus, cpus - in_tasks, ray.cluster_resources().get("memory", 0))
    needed = encoders + 1 if in_tasks else encoders
    if not gpus and cpus < needed:
        raise InvalidArgument(f"{encoders} CPU encoder replicas need {needed} CPUs of the Ray cluster "
                              f"(one each{', one more for decoding' if in_tasks else ''}); it has {cpus}")
    threads = settings.threads
    if not threads and not gpus and on_this_node(ray):
        threads = max(1, _cores() // encoders)
    records = [r.as_record() for r in rows]
    blocks = max(1, min(1000, -(-len(records) // settings.batch)))
    ds = ray.data.from_items(records, override_num_blocks=blocks)
    replica_args = {"model_file": model.data, "fingerprint": model.fingerprint, "threads": threads}
    decode_args = {"preprocess": model.preprocess, "max_pixels": settings.max_pixels}
    if in_tasks:
        ds = ds.map_batches(decode_batch, batch_size=settings.batch, batch_format="numpy", num_cpus=1,
                            fn_kwargs=decode_args)
        replica = EncoderReplica
    else:
        replica, replica_args = DecodingReplica, {**replica_args, **decode_args}
    # One GPU per replica when the cluster has them; else one CPU each. A replica that dies is restarted
    # and its unfinished batches run again (Ray Data's defaults for actor pools). The memory a replica
    # reserves also keeps Ray Data from fusing a decode stage into the actors (it fuses stages whose
    # resources agree): decoding in tasks stays in tasks of its own, beside the forward passes.
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    ds = ds.map_batches(replica, batch_size=settings.batch, batch_format="numpy",
                        compute=ActorPoolStrategy(size=encoders), fn_constructor_kwargs=replica_args,
                        memory=REPLICA_MEMORY, **resources)
    log.info("embedding %d images with %d replicas (%s), batches of %d, decoding in %s", len(records),
             encoders, f"{gpus} GPUs" if gpus else "CPU", settings.batch,
             "tasks" if in_tasks else "the replicas")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        errors = batch["error"]
        ok = np.flatnonzero(errors == "")
        failures = tuple(FileFailure(str(batch["relative"][i]), str(errors[i]))
                         for i in np.flatnonzero(errors != ""))
        yield VectorBatch(
            client_ids=[str(batch["client_id"][i]) for i in ok],
            labels=[str(batch["label"][i]) for i in ok],
            metadata=[json.loads(batch["metadata"][i]) for i in ok],
            vectors=np.ascontiguousarray(batch["vector"][ok], dtype=np.float32),
            failures=failures,
        )


def replica_count(requested: int, gpus: int, cpus: int, memory: float) -> int:
    """The encoder replicas to start: `requested` when given (> 0); else one per GPU of the cluster, or,
    without GPUs, one per CPU (`cpus`: those the replicas may take) as far as the cluster's memory
    holds `REPLICA_MEMORY` for each. One single-threaded replica per core beat one replica on every
    core by a third on 2 cores (1,047 and 1,084 against 791 images/s, `twinsearch embed` over 70,000
    Fashion-MNIST PNGs): each replica decodes while the other runs its forward pass."""
    if requested > 0:
        return requested
    if gpus > 0:
        return gpus
    by_memory = int(memory // REPLICA_MEMORY) if memory > 0 else cpus
    return max(1, min(cpus, by_memory))


def decode_in_tasks(settings: EmbedSettings, gpus: int) -> bool:
    """Whether images are decoded in CPU tasks of their own (True) or by the replicas (False).

    "auto" decodes in tasks when the replicas run on GPUs (the CPUs decode while the GPUs run forward
    passes) and in the replicas on CPUs only, where both share the same cores (`bench.ray_profile`)."""
    return settings.decode == "tasks" or (settings.decode == "auto" and gpus > 0)


def local_size(ray_settings: RaySettings, settings: EmbedSettings) -> RaySettings:
    """The Ray settings with a local instance's CPUs made enough for the pipeline: each CPU replica
    holds one logical CPU for as long as it lives, and decoding in tasks needs at least one more, else
    the pipeline waits for ever. Logical CPUs beyond the cores only let the processes share them."""
    if ray_settings.address is not None:
        return ray_settings
    wanted = max(ray_settings.num_cpus or _cores(), settings.encoders + (settings.decode == "tasks"))
    return RaySettings(None, wanted, ray_settings.object_store_mb)


def _cores() -> int:
    import os

    return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------- twinsearch embed
@dataclass(frozen=True)
class EmbedReport:
    """found == embedded + skipped + failed: each row of the source is embedded now, was written by an
    earlier run (skipped), or failed (`failures`, also in DIR/failures.jsonl)."""

    out: Path
    model: str
    fingerprint: str
    found: int
    embedded: int
    skipped: int
    failures: tuple[FileFailure, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    files: int = 0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[int, int, int], None]  # (rows to embed, rows done, failed so far)


def embed_to_parquet(source: str | Path, out: str | Path, *, model: str | Path | None = None,
                     class_depth: int = 1, columns: tuple[str, str] = ("path", "label"),
                     settings: EmbedSettings = DEFAULT_EMBED,
                     ray_settings: RaySettings = LOCAL_RAY, rows_per_file: int | None = None,
                     progress: Progress | None = None) -> EmbedReport:
    """Embed every image of `source` not yet in `out` and write the vectors there (see the module
    docstring). `columns`: a manifest's path and label columns. The failures of this run are written to
    `out`/failures.jsonl (one JSON object per line: path, reason)."""
    started = time.perf_counter()
    model_file = ModelFile.load(model)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {str(out)!r} is a file, not a folder")
    listing: Listing = list_source(source, class_depth, path_column=columns[0], label_column=columns[1])
    if not listing.found:  # a wrong path, class depth or mount: not a run that embedded everything
        what = "rows" if Path(source).suffix.lower() in MANIFEST_SUFFIXES else \
            f"image files ({', '.join(IMAGE_EXTENSIONS)})"
        raise InvalidArgument(f"{str(source)!r} holds no {what}: nothing to embed")
    existing, done = _vectors_in(out)
    if existing is not None and existing.fingerprint != model_file.fingerprint:
        raise FailedPrecondition(
            f"{out} holds vectors of model {existing.fingerprint!r} ({existing.model}); this run embeds with "
            f"model {model_file.fingerprint!r} ({model_file.name}): use another --out folder")
    todo = [r for r in listing.rows if r.client_id not in done]
    skipped = len(listing.rows) - len(todo)
    failures = list(listing.failures)
    try:  # told now, not after the images are embedded and the first file cannot be written
        writer = VectorFileWriter(out, model=model_file.name, fingerprint=model_file.fingerprint,
                                  dim=model_file.dim, **({"rows_per_file": rows_per_file} if rows_per_file else {}))
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise InvalidArgument(f"cannot write in the --out folder {str(out)!r}: {exc.strerror or exc}") from None
    finished = 0
    if progress is not None:
        progress(len(todo), 0, len(failures))
    try:
        if todo:
            with ray_session(local_size(ray_settings, settings)):
                for batch in embed_rows(todo, model_file, settings):
                    writer.add(batch.client_ids, batch.labels, batch.metadata, batch.vectors)
                    failures.extend(batch.failures)
                    finished += len(batch) + len(batch.failures)
                    if progress is not None:
                        progress(len(todo), finished, len(failures))
    finally:
        writer.close()  # what was embedded is kept, as whole files, even when the run stops early
        _write_failures(out / FAILURES_FILE, failures)
    report = EmbedReport(out=out, model=model_file.name, fingerprint=model_file.fingerprint, found=listing.found,
                         embedded=writer.rows_written, skipped=skipped, failures=tuple(failures),
                         seconds=time.perf_counter() - started, files=writer.files_written)
    log.info("embedded %d, skipped %d, failed %d of %d in %.1f s", report.embedded, report.skipped, report.failed,
             report.found, report.seconds)
    return report


def _vectors_in(out: Path) -> tuple[VectorsInfo | None, set[str]]:
    """What the vector files already in `out` hold, and their client ids; InvalidArgument naming a file
    that cannot be read (pyarrow's message names none)."""
    if not out.is_dir():
        return None, set()
    try:
        existing = read_info(out)
        return existing, written_ids(out) if existing is not None else set()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(exc, TwinsearchError):
            raise
        import pyarrow.parquet as pq

        for f in sorted(out.glob(PATTERN)):
            try:
                pq.read_table(f, columns=["client_id"])
            except (OSError, ValueError):
                raise InvalidArgument(f"the vector file {str(f)!r} in --out cannot be read ({exc}): move it out of "
                                      "the folder (its rows are embedded again) or use another --out folder") from None
        raise


def _write_failures(path: Path, failures: Sequence[FileFailure]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        for failure in failures:
            f.write(json.dumps({"path": failure.path, "reason": failure.reason}) + "\n")
    temporary.replace(path)
