"""A float16 copy of a flat index's rows, which picks a lone query's candidates.

A lone query against a flat float32 index reads every row: 51 MB for 100k x 128, more than the cache
of a small server, so the scan runs at the speed of memory. The same rows in float16 take half as
much (25.6 MB for 100k x 128, which a 32 MB cache can keep between calls); FAISS's scalar-quantizer
kernel scans them with SIMD conversion, in chunks spread over the cores.

The answers stay those of the float32 rows. Rounding to float16 moves a row by at most `error` (the
largest Euclidean distance between a row and its float16 copy, measured on the rows themselves as
they are added), so a row's true distance to the query is at least its float16 distance less
`error`. Each chunk returns its `depth` nearest float16 rows, and the `depth` nearest of those are the
candidates; every other row lies at float16 distance at least the deepest candidate's (or, never
returned, its chunk's deepest), which gives `Candidates.lower`: a lower bound on the true distance of
every row that is not a candidate. The caller ranks the candidates by their float32
distances and keeps the result only when that bound shows no other row can be among them
(`VectorIndex._search_one`); otherwise it scans the float32 rows as before.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock

import faiss
import numpy as np

from twinsearch.server.scoring import unseen_bound

# Rows per FAISS scalar-quantizer index. Chunks are scanned in parallel, so a gallery of a few chunks
# already uses every core; each chunk's search costs a call and a heap of `depth`.
CHUNK_ROWS = 16_384

# Chunks are scanned on this many threads: one per CPU.
_THREADS = max(1, os.cpu_count() or 1)

_pool: ThreadPoolExecutor | None = None
_pool_lock = Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # One OpenMP thread each: the chunks are the parallelism (FAISS would otherwise start a team
            # of threads for every chunk's one query, on cores the other chunks are using).
            _pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="half-screen",
                                       initializer=faiss.omp_set_num_threads, initargs=(1,))
        return _pool


@dataclass(frozen=True)
class Candidates:
    """Positions (int64, unique) of the rows a float16 scan kept, and a lower bound (Euclidean, float)
    on the true distance to the query of every row not among them (inf when every row is among them)."""

    positions: np.ndarray
    lower: float


class HalfRows:
    """The float16 copy of a flat index's rows, in insertion order. Rows are only appended; a caller
    whose rows move (compaction, a reload) drops this object and builds another."""

    def __init__(self, dim: int):
        self.dim = dim
        self.ntotal = 0
        self.error = 0.0  # largest |row - float16(row)|, Euclidean; inf if a row overflowed float16
        self._chunks: list[faiss.IndexScalarQuantizer] = []

    def extend(self, rows: np.ndarray) -> None:
        """Append float32 rows (m, dim): the rows that follow the `ntotal` already held."""
        start = 0
        while start < len(rows):
            if not self._chunks or self._chunks[-1].ntotal >= CHUNK_ROWS:
                self._chunks.append(faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16))
            chunk = self._chunks[-1]
            take = min(CHUNK_ROWS - chunk.ntotal, len(rows) - start)
            block = np.ascontiguousarray(rows[start:start + take], dtype=np.float32)
            chunk.add(block)
            # A float32 less its float16 rounding is exact in float32 (the two are within a factor of 2,
            # or the rounding is 0); only the sum of squares rounds, by a relative dim * 2^-24 at most.
            with np.errstate(over="ignore", invalid="ignore"):
                moved = chunk.reconstruct_n(chunk.ntotal - take, take) - block
                moved = float(np.sqrt(np.einsum("ij,ij->i", moved, moved).max()) * (1.0 + 2.0 ** -12))
            self.error = max(self.error, moved if math.isfinite(moved) else math.inf)
            start += take
            self.ntotal += take

    @property
    def usable(self) -> bool:
        return self.ntotal > 0 and math.isfinite(self.error)

    def candidates(self, query: np.ndarray, depth: int, max_sq_norm: float) -> Candidates:
        """The `depth` nearest rows to `query` (float32 (dim,)) by float16 distance: each chunk's `depth`
        nearest, then the nearest `depth` of those (every row when the copy holds no more).

        max_sq_norm: the largest squared norm of a row (float32), for the float32 sums' slack."""
        q = np.ascontiguousarray(query[None], dtype=np.float32)
        chunks = self._chunks
        workers = min(_THREADS, len(chunks))
        groups = [list(range(w, len(chunks), workers)) for w in range(workers)]

        def scan(group: list[int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
            return [(i, *chunks[i].search(q, depth)) for i in group]

        futures = [_executor().submit(scan, g) for g in groups[1:]]
        team = faiss.omp_get_max_threads()  # this thread's own OpenMP setting, restored below
        faiss.omp_set_num_threads(1)
        try:
            found = scan(groups[0])
        finally:
            faiss.omp_set_num_threads(team)
        for f in futures:
            found.extend(f.result())

        positions, distances, deepest = [], [], math.inf
        for i, dist, local in found:
            kept = local[0] >= 0
            positions.append(local[0][kept] + i * CHUNK_ROWS)
            distances.append(dist[0][kept])
            if chunks[i].ntotal > depth:  # rows of this chunk were left out: none nearer than its deepest
                deepest = min(deepest, float(dist[0, depth - 1]))
        cand, dist = np.concatenate(positions), np.concatenate(distances)
        if len(cand) > depth:
            # Only the `depth` nearest of all chunks' rows go on (the caller reads each candidate's float32
            # row at random: with every chunk's kept, an eighth of a lone search's time in a profile); the
            # rows left out lie no nearer than the deepest kept.
            keep = np.argpartition(dist, depth - 1)[:depth]
            deepest = min(deepest, float(dist[keep].max()))
            cand = np.sort(cand[keep])
        lower = math.inf
        if not math.isinf(deepest):
            # FAISS's float32 sums over the float16 rows err as its sums over float32 rows do
            # (`unseen_bound`), with the float16 rows' largest norm; rounding moved each row by `error`.
            reach = math.sqrt(max_sq_norm) + self.error
            lower = unseen_bound(deepest, float(np.dot(query, query)), reach * reach, self.dim) - self.error
        return Candidates(cand.astype(np.int64, copy=False), lower)
