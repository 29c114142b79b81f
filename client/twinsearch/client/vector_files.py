"""Folders of embedded vectors as Parquet files: what `twinsearch embed` writes and `twinsearch index
--vectors` reads.

Every file in the folder (`part-*.parquet`) has the same schema:

    client_id  string                        the image's client id (as `twinsearch index` gives it)
    label      string                        its class
    metadata   map<string, string>
    vector     fixed_size_list<float32>[dim] L2-normalised embedding

and the schema's metadata records the model that made the vectors (`twinsearch.model`,
`twinsearch.fingerprint`, `twinsearch.dim`). A file is written to a temporary name and renamed, so a
folder only ever holds whole files: an interrupted run loses the rows it had not written yet, never
part of a file, and the next run embeds just those.

Needs pyarrow (the `twinsearch[ray]` extra brings it); importing this module does not.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinsearch.client.bulk import FileFailure
from twinsearch.client.errors import FailedPrecondition, InvalidArgument

PATTERN = "part-*.parquet"
KEY_MODEL = b"twinsearch.model"
KEY_FINGERPRINT = b"twinsearch.fingerprint"
KEY_DIM = b"twinsearch.dim"
DEFAULT_ROWS_PER_FILE = 8192


def require_pyarrow():
    """(pyarrow, pyarrow.parquet); InvalidArgument naming the extra to install when missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgument("reading and writing vector files needs pyarrow; install the Ray extra: "
                              "pip install 'twinsearch[ray]'") from None
    return pa, pq


@dataclass(frozen=True)
class VectorsInfo:
    """What a folder of vector files holds: the model that made them, the files and their rows."""

    model: str
    fingerprint: str
    dim: int
    files: tuple[Path, ...]
    rows: int


def schema(model: str, fingerprint: str, dim: int):
    pa, _ = require_pyarrow()
    return pa.schema(
        [("client_id", pa.string()), ("label", pa.string()), ("metadata", pa.map_(pa.string(), pa.string())),
         ("vector", pa.list_(pa.float32(), int(dim)))],
        metadata={KEY_MODEL: model.encode(), KEY_FINGERPRINT: fingerprint.encode(), KEY_DIM: str(int(dim)).encode()},
    )


def read_info(folder: str | Path) -> VectorsInfo | None:
    """The model and row count of the vector files in `folder`; None when it holds none.
    FailedPrecondition when its files come from different models."""
    _, pq = require_pyarrow()
    files = tuple(sorted(Path(folder).glob(PATTERN)))
    if not files:
        return None
    seen: dict[tuple[str, str, int], Path] = {}
    rows = 0
    for f in files:
        meta = pq.read_metadata(f)
        kv = meta.metadata or {}
        if KEY_FINGERPRINT not in kv:
            raise InvalidArgument(f"{f} is not a twinsearch vector file (no {KEY_FINGERPRINT.decode()} in its schema)")
        seen.setdefault((kv[KEY_MODEL].decode(), kv[KEY_FINGERPRINT].decode(), int(kv[KEY_DIM])), f)
        rows += meta.num_rows
    if len(seen) > 1:
        listing = "; ".join(f"{fp} ({name}) in {path.name}" for (name, fp, _), path in seen.items())
        raise FailedPrecondition(f"{folder} holds vectors of several models: {listing}")
    (model, fingerprint, dim), = seen
    return VectorsInfo(model, fingerprint, dim, files, rows)


def written_ids(folder: str | Path) -> set[str]:
    """The client ids the vector files in `folder` hold."""
    _, pq = require_pyarrow()
    ids: set[str] = set()
    for f in sorted(Path(folder).glob(PATTERN)):
        ids.update(pq.read_table(f, columns=["client_id"]).column("client_id").to_pylist())
    return ids


@dataclass(frozen=True)
class VectorBatch:
    """Rows of vectors; `failures` names the images of the same stretch that could not be embedded
    (when the batch comes straight from an embedding pipeline)."""

    client_ids: list[str]
    labels: list[str]
    metadata: list[dict[str, str]]
    vectors: np.ndarray   # (n, dim) float32
    failures: tuple[FileFailure, ...] = ()

    def __len__(self) -> int:
        return len(self.client_ids)


def iter_batches(folder: str | Path, batch_size: int = 1024) -> Iterator[VectorBatch]:
    """The rows of every vector file in `folder`, `batch_size` at a time, file by file."""
    _, pq = require_pyarrow()
    info = read_info(folder)
    if info is None:
        return
    for f in info.files:
        for record in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
            flat = record.column("vector").flatten().to_numpy(zero_copy_only=False)
            yield VectorBatch(
                client_ids=record.column("client_id").to_pylist(),
                labels=record.column("label").to_pylist(),
                metadata=[dict(m or ()) for m in record.column("metadata").to_pylist()],
                vectors=np.ascontiguousarray(flat.reshape(len(record), info.dim), dtype=np.float32),
            )


class VectorFileWriter:
    """Writes rows into whole Parquet files of `rows_per_file` rows (the last one shorter) in `folder`."""

    def __init__(self, folder: str | Path, *, model: str, fingerprint: str, dim: int,
                 rows_per_file: int = DEFAULT_ROWS_PER_FILE):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema(model, fingerprint, dim)
        self.dim = int(dim)
        self.rows_per_file = max(1, int(rows_per_file))
        self.files_written = 0
        self.rows_written = 0
        self._run = uuid.uuid4().hex[:8]  # files of different runs never share a name
        self._pending: list[tuple[list[str], list[str], list[Mapping[str, str]], np.ndarray]] = []
        self._pending_rows = 0

    def add(self, client_ids: Sequence[str], labels: Sequence[str], metadata: Sequence[Mapping[str, str]],
            vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(client_ids):
            raise ValueError(f"expected ({len(client_ids)}, {self.dim}) vectors, got {vectors.shape}")
        if not len(client_ids):
            return
        self._pending.append((list(client_ids), list(labels), list(metadata), vectors))
        self._pending_rows += len(client_ids)
        while self._pending_rows >= self.rows_per_file:
            self._write(self.rows_per_file)

    def close(self) -> None:
        """Write what is pending."""
        if self._pending_rows:
            self._write(self._pending_rows)

    def _write(self, n: int) -> None:
        pa, pq = require_pyarrow()
        ids, labels, metadata, vectors = [], [], [], []
        while len(ids) < n:
            b_ids, b_labels, b_meta, b_vec = self._pending[0]
            take = min(n - len(ids), len(b_ids))
            ids += b_ids[:take]
            labels += b_labels[:take]
            metadata += [list(m.items()) for m in b_meta[:take]]
            vectors.append(b_vec[:take])
            if take == len(b_ids):
                self._pending.pop(0)
            else:
                self._pending[0] = (b_ids[take:], b_labels[take:], b_meta[take:], b_vec[take:])
        self._pending_rows -= n
        flat = np.ascontiguousarray(np.concatenate(vectors)).ravel()
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), pa.array(labels, pa.string()),
             pa.array(metadata, self.schema.field("metadata").type),
             pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), self.dim)],
            schema=self.schema)
        final = self.folder / f"part-{self._run}-{self.files_written:05d}.parquet"
        temporary = final.with_name(f".{final.name}.tmp")
        try:
            pq.write_table(table, temporary)
            with open(temporary, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temporary, final)
        except BaseException:  # a full disk, a Ctrl-C: our temporary goes (another run's may still be written)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise
        self.files_written += 1
        self.rows_written += n
