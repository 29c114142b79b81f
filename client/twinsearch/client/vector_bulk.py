"""Loading embedded vectors into a gallery: the rows of `twinsearch embed`'s Parquet files, or
batches streamed from an embedding pipeline, sent over EnrollStream as vectors.

The same counting as folder indexing (`twinsearch.client.bulk.send_batches`): each row is stored,
skipped (its client id is stored already, so a re-run stores nothing new) or failed, and
`found == stored + skipped + failed`. Before anything is sent, the vectors' model fingerprint is
compared with the gallery's: vectors of another model are refused (FailedPrecondition naming both).
A pipeline that embeds for a gallery asks first which client ids it stores (`stored_client_ids`) and
embeds only the others; those count as skipped too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from twinsearch.client.bulk import BulkProgress, BulkReport, FileFailure, send_batches
from twinsearch.client.errors import FailedPrecondition, InvalidArgument, TwinsearchError
from twinsearch.client.types import EnrollItem
from twinsearch.client.vector_files import VectorBatch, iter_batches, read_info

log = logging.getLogger(__name__)


def check_fingerprint(client, gallery: str, fingerprint: str, model: str, where: str) -> None:
    """FailedPrecondition unless `gallery` is bound to the model with `fingerprint`."""
    info = client.get_gallery(gallery)
    if info.model_fingerprint != fingerprint:
        raise FailedPrecondition(
            f"the vectors in {where} come from model {fingerprint!r} ({model}); gallery {gallery!r} is bound "
            f"to model {info.model_fingerprint!r}: embed with the gallery's model, or load into another gallery")


def enroll_vector_batches(
    client,
    gallery: str,
    batches: Iterable[VectorBatch],
    *,
    total: int,
    found: int,
    failures: Iterable[FileFailure] = (),
    skipped: int = 0,
    batch_size: int = 256,
    max_in_flight: int = 4,
    progress: Callable[[BulkProgress], None] | None = None,
) -> BulkReport:
    """Send the rows of `batches` (re-cut to `batch_size` per request) into `gallery`; `failures`: rows
    found but never embedded (counted as failed); `skipped`: rows found but left out before embedding
    because the gallery stores their client ids already (counted as skipped). The caller has checked
    the fingerprint."""
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    failures = list(failures)

    def requests(counts: dict[str, int]) -> Iterator[list[EnrollItem]]:
        items: list[EnrollItem] = []
        for batch in batches:
            failures.extend(batch.failures)
            counts["local_failed"] += len(batch.failures)
            for i, client_id in enumerate(batch.client_ids):
                items.append(EnrollItem(label=batch.labels[i], payload=batch.vectors[i], client_id=client_id,
                                  metadata=batch.metadata[i]))
                if len(items) == batch_size:
                    yield items
                    items = []
        if items:
            yield items

    report = send_batches(client, gallery, requests, total=total, found=found, failures=failures, names={},
                          max_in_flight=max_in_flight, progress=progress, started=started)
    return replace(report, skipped=report.skipped + skipped) if skipped else report


def stored_client_ids(client, gallery: str, client_ids: Sequence[str]) -> set[str]:
    """Those of `client_ids` that `gallery` stores already (`find_items`); none from a server too old
    to answer FindItems (its Enroll still skips them on arrival, after they were embedded)."""
    try:
        return {item.client_id for item in client.find_items(gallery, client_ids)}
    except TwinsearchError as exc:
        if exc.code != "UNIMPLEMENTED":
            raise
        log.info("the server cannot list stored client ids (%s): every image is embedded", exc.details)
        return set()


def enroll_vectors(client, gallery: str, folder: str | Path, *, batch_size: int = 256, max_in_flight: int = 4,
                   progress: Callable[[BulkProgress], None] | None = None) -> BulkReport:
    """Load the vector files in `folder` (written by `twinsearch embed`) into `gallery`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgument(f"not a folder: {str(folder)!r}")
    info = read_info(folder)
    if info is None:
        raise InvalidArgument(f"no vector files (part-*.parquet) in {str(folder)!r}")
    check_fingerprint(client, gallery, info.fingerprint, info.model, str(folder))
    return enroll_vector_batches(client, gallery, iter_batches(folder), total=info.rows, found=info.rows,
                                 batch_size=batch_size, max_in_flight=max_in_flight, progress=progress)
