"""The FAISS index of one gallery: exact (flat), IVF or HNSW, behind stored item ids.

Every kind is an `IndexIDMap` around the FAISS index, so search returns the SQLite item ids. Results
are squared L2 distances as FAISS gives them; the caller takes square roots (Euclidean distance on
L2-normalised vectors, in [0, 2], smaller = more alike).

Deletions are tombstones: the caller drops ids it no longer holds from results and, once enough
have piled up, compacts: a flat index in place (`compact`), IVF and HNSW by building a fresh index
beside the live one (`empty_like`, keeping IVF's trained cells). One path for every kind, because
HNSW and the GPU indexes cannot remove vectors in place.

With a GPU (`faiss.get_num_gpus() > 0` and the store's setting allows it), exact and IVF indexes are
copied to it (`faiss.index_cpu_to_gpu`, which clones the id map and moves the inner index); HNSW
always stays on the CPU. Snapshots are always written from a CPU copy.

Reported distances are not FAISS's: the caller recomputes the returned candidates exactly
(`scoring.exact_distances`) from the stored vectors, which `vectors` gives without a second copy:
rows of the flat storage (flat, and HNSW's own flat storage) or, for IVF, through a direct map kept
on the inner index (internal position -> (list, offset): 8 bytes a vector, about 1% of a 128-d
float32 gallery). A GPU IVF index cannot reconstruct by position; its caller reads SQLite instead.
`max_sq_norm` (the largest stored squared norm) bounds FAISS's float32 error for the caller's proofs.

An IVF index needs training data: until a gallery holds `IndexParams.ivf_min_train` vectors its IVF
index is a flat one (exact, and cheap at that size), and it is trained on SQLite's vectors when it
crosses that size, then again whenever it has grown `ivf_retrain_growth` times since.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass

import faiss
import numpy as np

from twinsearch.client.types import IndexKind, IndexSpec
from twinsearch.server.halfscreen import HalfRows
from twinsearch.server.scoring import unseen_bound

log = logging.getLogger(__name__)

# FAISS GPU indexes select at most this many neighbours per query.
GPU_MAX_K = 2048


@dataclass(frozen=True)
class IndexParams:
    """Store-wide defaults for the parameters an IndexSpec leaves at 0."""

    ivf_min_train: int = 10_000      # an IVF gallery is flat (exact) below this many vectors
    ivf_retrain_growth: float = 2.0  # retrain IVF (auto nlist) when the gallery grew this many times
    ivf_nprobe_fraction: float = 0.1  # auto nprobe: this fraction of nlist ...
    ivf_min_nprobe: int = 16          # ... but at least this many cells
    # Exhaustive-search kernels, process-wide faiss settings (None leaves faiss's own). faiss 1.15 uses
    # its SIMD kernel below a large query count; on a 2-core AVX2 box, batches of 64 to 1,024 queries
    # against 200k x 128 ran 3 to 6 times faster through BLAS with wide database blocks (measured
    # interleaved, best of 5), and on a 2-core AVX-512 box batches of 16 and 32 against 1M x 128 ran
    # about twice as fast (109 against 48 and 190 against 97 queries/s in-process); from 8 queries on,
    # the 32-client identify load ran fastest (threshold 2: 38, 8: 62, 16: 55 queries/s, interleaved).
    # A lone query takes VectorIndex._search_one instead. Scratch per concurrent search:
    # blas_query_bs * blas_database_bs floats.
    blas_threshold: int | None = 8
    blas_query_bs: int | None = 256
    blas_database_bs: int | None = 32768
    # A lone query against a flat CPU index of half_screen_rows to half_screen_max_rows rows picks its
    # candidates from a float16 copy of the rows (`halfscreen`: half the memory traffic, and at 100k x
    # 128 a copy that a 32 MB cache keeps; it costs half the index's memory again). Below, the float32
    # rows are cheap to scan; above, the gain fell (in-process, median lone search on 2 cores: 250k rows
    # 3.3 ms against 5.8, 500k 6.9 against 11.6, 1M 18.6 against 23.4) while the copy grows (256 MB at
    # 1M x 128). half_screen_max_rows 0 turns the copy off. The margin: rows each chunk of the copy
    # returns beyond the depth.
    half_screen_rows: int = 32_768
    half_screen_max_rows: int = 524_288
    half_screen_margin: int = 32

    def __post_init__(self) -> None:
        if self.half_screen_rows < 0:
            raise ValueError(f"half_screen_rows must be >= 0, got {self.half_screen_rows}")
        if self.half_screen_max_rows < 0:
            raise ValueError(f"half_screen_max_rows must be >= 0, got {self.half_screen_max_rows}")
        if self.half_screen_margin < 0:
            raise ValueError(f"half_screen_margin must be >= 0, got {self.half_screen_margin}")


def configure_faiss(params: IndexParams) -> None:
    """Apply the process-wide faiss kernel settings of `params` (see IndexParams)."""
    for attr, value in (("distance_compute_blas_threshold", params.blas_threshold),
                        ("distance_compute_blas_query_bs", params.blas_query_bs),
                        ("distance_compute_blas_database_bs", params.blas_database_bs)):
        if value is not None:
            setattr(faiss.cvar, attr, int(value))


def auto_nlist(n: int) -> int:
    """IVF cells for n vectors: about 4 * sqrt(n), with at least 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


class GpuContext:
    """FAISS GPU resources shared by a store's indexes (one device).

    `lock` serialises calls into the GPU indexes: StandardGpuResources (its streams and scratch
    memory) must not be used from two threads at once, while CPU indexes take concurrent searches.
    """

    def __init__(self, device: int = 0):
        self.device = device
        self.resources = faiss.StandardGpuResources()
        self.lock = threading.Lock()

    def to_gpu(self, index: faiss.Index) -> faiss.Index:
        return faiss.index_cpu_to_gpu(self.resources, self.device, index)


class VectorIndex:
    """One gallery's FAISS index. Not thread-safe: the gallery's lock guards it."""

    def __init__(self, dim: int, spec: IndexSpec, params: IndexParams, gpu: GpuContext | None):
        self.dim = dim
        self.spec = spec
        self.params = params
        self.gpu = gpu if spec.kind != IndexKind.HNSW else None
        self.nlist = 0       # > 0 once an IVF index is trained
        self.trained_at = 0  # gallery size when IVF was trained
        self.max_sq_norm = 0.0  # largest squared norm of a vector added (never lowered: a safe bound)
        self._ids_sorted = True  # the id map ascends (SQLite ids grow), so positions are a binary search
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None  # (order, sorted ids) when it does not
        self._sq_norms: np.ndarray | None = None  # float32 squared norms of a flat index's rows (search_one)
        self._half: HalfRows | None = None  # their float16 copy (search_one, see IndexParams)
        self._half_lock = threading.Lock()  # one search builds or extends the copy at a time
        self.screen_fallbacks = 0  # lone queries the float16 copy could not answer alone
        self.index = self._wrap(self._empty_cpu())

    # ------------------------------------------------------------------ construction
    def _empty_cpu(self, nlist: int = 0) -> faiss.Index:
        if self.spec.kind == IndexKind.HNSW:
            inner = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m)
            inner.hnsw.efConstruction = self.spec.ef_construction
            inner.hnsw.efSearch = self.spec.ef_search
            return inner
        if self.spec.kind == IndexKind.IVF and nlist > 0:
            quantizer = faiss.IndexFlatL2(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_L2)
            ivf.own_fields = True
            quantizer.this.disown()  # the IVF index owns and frees it
            ivf.set_direct_map_type(faiss.DirectMap.Array)  # `vectors`: reconstruct by position
            return ivf
        return faiss.IndexFlatL2(self.dim)

    def _wrap(self, inner: faiss.Index) -> faiss.Index:
        idmap = faiss.IndexIDMap(inner)
        idmap.own_fields = True
        inner.this.disown()
        return self._place(idmap)

    def _place(self, cpu_index: faiss.Index) -> faiss.Index:
        if self.gpu is None:
            return cpu_index
        with self.gpu.lock:
            return self.gpu.to_gpu(cpu_index)

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_ivf(self) -> bool:
        return self.nlist > 0

    @property
    def max_depth(self) -> int:
        """Deepest search one call may ask for (FAISS GPU selection is bounded)."""
        return GPU_MAX_K if self.on_gpu else max(1, self.ntotal)

    @property
    def exact(self) -> bool:
        """Whether searches are exhaustive (flat, or an IVF gallery not yet trained)."""
        return self.spec.kind == IndexKind.EXACT or (self.spec.kind == IndexKind.IVF and not self.is_ivf)

    # ------------------------------------------------------------------ IVF lifecycle
    def wants_training(self, n_items: int) -> bool:
        """Whether an IVF gallery of n_items should be (re)trained now."""
        if self.spec.kind != IndexKind.IVF:
            return False
        if not self.is_ivf:
            return n_items >= max(self.params.ivf_min_train, 39 * max(self.spec.nlist, 1))
        return self.spec.nlist == 0 and n_items >= self.params.ivf_retrain_growth * self.trained_at

    def reset(self, training: np.ndarray | None = None, n_items: int = 0) -> None:
        """Empty the index; an IVF gallery is trained on `training` (float32, (m, dim)) when given."""
        nlist = 0
        if self.spec.kind == IndexKind.IVF and training is not None and len(training):
            nlist = self.spec.nlist or auto_nlist(n_items or len(training))
            nlist = max(1, min(nlist, len(training)))
        inner = self._empty_cpu(nlist)
        if nlist:
            inner.train(np.ascontiguousarray(training, dtype=np.float32))
            log.info("trained IVF index: %d cells on %d vectors", nlist, len(training))
        self.nlist = nlist
        self.trained_at = n_items if nlist else 0
        self.max_sq_norm = 0.0
        self._ids_sorted, self._by_id, self._sq_norms, self._half = True, None, None, None
        self.index = self._wrap(inner)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if not self.is_ivf:
            return
        if self.on_gpu:
            # A GPU IVF index is no faiss.IndexIVF; the GPU parameter space knows both, through the id map.
            with self._device():
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.nprobe)
        else:
            faiss.extract_index_ivf(self.index).nprobe = self.nprobe

    @property
    def nprobe(self) -> int:
        if not self.is_ivf:
            return 0
        if self.spec.nprobe:
            return min(self.spec.nprobe, self.nlist)
        auto = max(self.params.ivf_min_nprobe, int(math.ceil(self.params.ivf_nprobe_fraction * self.nlist)))
        return min(auto, self.nlist)

    # ------------------------------------------------------------------ data
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add float32 (n, dim) vectors under int64 ids."""
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            held = self._id_view()
            ascending = bool((np.diff(ids) > 0).all()) and (not len(held) or ids[0] > held[-1])
            with self._device():
                self.index.add_with_ids(vectors, ids)
            self._ids_sorted = self._ids_sorted and ascending
            self._by_id = None
            v = vectors.astype(np.float64)
            self.max_sq_norm = max(self.max_sq_norm, float(np.einsum("ij,ij->i", v, v).max()))

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(D, I): squared L2 distances float32 (n, depth) ascending, ids int64 (n, depth), -1 past the end."""
        depth = max(1, min(depth, self.max_depth))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = self._flat_cpu_rows()
        if rows is not None and len(rows):
            if len(queries) == 1:
                return self._search_one(rows, queries[0], depth)
            return self._search_flat(rows, queries, depth)
        with self._device():
            return self.index.search(queries, depth)

    def _flat_cpu_rows(self) -> np.ndarray | None:
        """The rows of a flat index on the CPU, else None."""
        if self.on_gpu or self.spec.kind == IndexKind.HNSW:
            return None
        inner = faiss.downcast_index(self.index.index)
        return flat_rows(inner) if isinstance(inner, faiss.IndexFlatL2) else None

    def _search_one(self, rows: np.ndarray, query: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """One query against a flat index, through one matrix-vector product.

        FAISS runs a lone query through its SIMD kernel on one thread; the product runs on every core
        (100k x 128: about 1.1 ms against 3.5 ms on 2 cores, `bench/latency.py`). Rows are ranked by
        |x|^2 - 2 x.q (the distance's order without the query's constant), and the nearest are picked by
        `_nearest_positions` rather than a partition of every row. Their distances take the form of
        FAISS's own BLAS kernel, |x|^2 + |q|^2 - 2 x.q in float32, so the error slack that
        `scoring.unseen_bound` allows FAISS covers them as well; the caller recomputes the candidates
        exactly in any case. From `half_screen_rows` rows on, a float16 copy of the rows picks candidates
        first and the product runs over those alone (`_screened`), when it can prove the same answer."""
        norms = self._row_norms(rows)
        n = len(rows)
        take = min(depth, n)
        q_sq = np.float32(query @ query)
        screened = self._screened(rows, norms, query, q_sq, take)
        if screened is not None:
            order, d = screened
        else:
            key = rows @ query
            key *= np.float32(-2.0)
            key += norms
            order = _nearest_positions(key, take)
            d = key[order]
        dist = np.full((1, depth), np.finfo(np.float32).max, dtype=np.float32)
        ids = np.full((1, depth), -1, dtype=np.int64)
        d += q_sq
        np.maximum(d, np.float32(0.0), out=d)
        dist[0, :take] = d
        ids[0, :take] = self._id_view()[order]
        return dist, ids

    def _screened(self, rows: np.ndarray, norms: np.ndarray, query: np.ndarray, q_sq: np.float32,
                  take: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The `take` nearest positions and their keys (|x|^2 - 2 x.q, float32), ranked among the
        candidates of the float16 copy (`halfscreen`), or None when the copy is off, unusable, or cannot
        prove that no other row belongs among them (the caller then scans every row)."""
        depth = take + self.params.half_screen_margin
        if depth > SCREEN_MAX_DEPTH:  # deep searches would take most of every chunk as candidates
            return None
        half = self._half_rows(rows)
        if half is None:
            return None
        found = half.candidates(query, depth, self.max_sq_norm)
        cand = found.positions
        key = rows[cand] @ query
        key *= np.float32(-2.0)
        key += norms[cand]
        best = np.lexsort((cand, key))[:take]
        deepest = float(key[best[-1]] + q_sq)
        # The caller takes every row it was not given to lie at least unseen_bound(deepest) away.
        if found.lower < unseen_bound(max(deepest, 0.0), float(q_sq), self.max_sq_norm, self.dim):
            self.screen_fallbacks += 1
            return None
        return cand[best], key[best]

    def _half_rows(self, rows: np.ndarray) -> HalfRows | None:
        """The float16 copy of the rows, or None outside `half_screen_rows` to `half_screen_max_rows`
        rows, or while another search is building it (0.5 s a million rows; meanwhile the caller scans
        the float32 rows).

        Built and extended here, by one search at a time; rows are only appended between resets,
        compactions and loads, which drop it. A search never sees it change under it: rows are added
        under the gallery's write lock, and searches hold its read lock."""
        if not self.params.half_screen_rows <= len(rows) <= self.params.half_screen_max_rows:
            self._half = None  # a gallery grown past the largest size lets its copy go
            return None
        if not self._half_lock.acquire(blocking=False):
            return None
        try:
            half = self._half
            if half is None or half.ntotal > len(rows):
                half = HalfRows(self.dim)
            if half.ntotal < len(rows):
                half.extend(rows[half.ntotal:])
            self._half = half
        finally:
            self._half_lock.release()
        return half if half.usable else None

    def _search_flat(self, rows: np.ndarray, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Several queries against a flat index: FAISS's own kernel (`knn_L2sqr`, what IndexFlatL2.search
        runs) given the rows' squared norms, which it would otherwise compute again on every search (on 1M
        x 128 with 8 to 32 queries a search takes 68 to 122 ms with them against 100 to 167 without).
        The same ids and distances as `index.search`."""
        n, d = rows.shape
        nq = len(queries)
        norms = self._row_norms(rows)
        dist = np.empty((nq, depth), dtype=np.float32)
        pos = np.empty((nq, depth), dtype=np.int64)
        faiss.knn_L2sqr(faiss.swig_ptr(queries), faiss.swig_ptr(rows), d, nq, n, depth,
                        faiss.swig_ptr(dist), faiss.swig_ptr(pos), faiss.swig_ptr(norms))
        held = self._id_view()
        ids = np.where(pos >= 0, held[np.maximum(pos, 0)], np.int64(-1))
        return dist, ids

    def _row_norms(self, rows: np.ndarray) -> np.ndarray:
        """Squared norms (float32, computed by FAISS's own kernel) of a flat index's rows, kept between
        searches and extended as rows are added (rows are only appended between resets, compactions and
        loads, which drop them)."""
        norms = self._sq_norms
        if norms is None or len(norms) > len(rows):
            norms = np.zeros(0, dtype=np.float32)
        if len(norms) < len(rows):
            tail = np.ascontiguousarray(rows[len(norms):])
            more = np.empty(len(tail), dtype=np.float32)
            faiss.fvec_norms_L2sqr(faiss.swig_ptr(more), faiss.swig_ptr(tail), tail.shape[1], len(tail))
            norms = np.concatenate([norms, more])
            self._sq_norms = norms
        return norms

    def _device(self):
        return self.gpu.lock if self.gpu is not None else nullcontext()

    def _id_view(self) -> np.ndarray:
        """The id map as an int64 array without a copy; valid until the index changes."""
        n = int(self.index.id_map.size())
        return faiss.rev_swig_ptr(self.index.id_map.data(), n) if n else np.zeros(0, dtype=np.int64)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Internal positions int64 of ids the index holds (live or tombstoned); KeyError otherwise."""
        ids = np.asarray(ids, dtype=np.int64)
        held = self._id_view()
        if self._ids_sorted:
            order, ordered = None, held
        else:
            if self._by_id is None:  # built once per change; the id map normally ascends
                order = np.argsort(held, kind="stable")
                self._by_id = (order, held[order])
            order, ordered = self._by_id
        pos = np.minimum(np.searchsorted(ordered, ids), max(len(ordered) - 1, 0))
        if not len(ordered) or not (ordered[pos] == ids).all():
            raise KeyError("ids not held by the index")
        return pos if order is None else order[pos]

    def vectors(self, ids: np.ndarray, *, copy_ok: bool = False) -> np.ndarray | None:
        """The stored float32 vectors (m, dim) of ids the index holds, in the order given.

        From the index itself, without copying it: a flat index's (or HNSW's) storage rows, or an IVF
        index's direct map. None for a GPU IVF index (it reconstructs only ranges), unless copy_ok,
        which reads them through a CPU copy of the whole index (for start-up, not for queries).
        """
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        pos = self.positions(ids)
        if self.on_gpu:
            if not self.is_ivf:
                with self._device():
                    return faiss.downcast_index(self.index.index).reconstruct_batch(pos)
            if not copy_ok:
                return None
            cpu = self.cpu_copy()  # held: it owns the IVF index below
            ivf = faiss.extract_index_ivf(cpu)
            ivf.make_direct_map()
            return ivf.reconstruct_batch(pos)
        inner = faiss.downcast_index(self.index.index)
        flat = flat_rows(inner)
        if flat is not None:
            return flat[pos]
        return inner.reconstruct_batch(pos)

    def ids(self) -> np.ndarray:
        """The int64 ids held (live and tombstoned), in insertion order."""
        # The id map stays a CPU object even around a GPU index, so no copy of the vectors is needed.
        return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def can_remove(self) -> bool:
        """Whether `compact` works in place: flat only. IndexIDMap.remove_ids assumes the inner index
        renumbers what is left the way IndexFlat does; IVF keeps its ids and HNSW cannot remove."""
        return self.spec.kind != IndexKind.HNSW and not self.is_ivf

    def empty_like(self) -> VectorIndex:
        """An empty index of the same kind, keeping a trained IVF quantizer (no retraining)."""
        other = VectorIndex(self.dim, self.spec, self.params, self.gpu)
        if self.is_ivf:
            inner = faiss.clone_index(self.cpu_copy().index)
            inner.reset()
            faiss.extract_index_ivf(inner).set_direct_map_type(faiss.DirectMap.Array)  # lost on a GPU
            other.nlist, other.trained_at = self.nlist, self.trained_at
            other.index = other._wrap(inner)
            other._apply_search_params()
        return other

    def compact(self, dead: np.ndarray) -> None:
        """Remove tombstoned ids in place (flat only, see `can_remove`; on a GPU through a CPU copy)."""
        if not len(dead):
            return
        cpu = self.cpu_copy() if self.on_gpu else self.index
        cpu.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(dead, dtype=np.int64)))
        self.index = self._place(cpu) if self.on_gpu else cpu
        self._by_id = None  # removal keeps the order of what is left
        self._sq_norms = self._half = None

    # ------------------------------------------------------------------ snapshots
    def cpu_copy(self) -> faiss.Index:
        if not self.on_gpu:
            return self.index
        with self._device():
            return faiss.index_gpu_to_cpu(self.index)

    def serialize_to(self, path: str) -> None:
        faiss.write_index(self.cpu_copy(), path)

    def load_from(self, path: str, nlist: int, trained_at: int) -> None:
        cpu = faiss.read_index(path)
        if cpu.d != self.dim:
            raise ValueError(f"snapshot index has dimension {cpu.d}, gallery has {self.dim}")
        if not isinstance(cpu, faiss.IndexIDMap):
            raise ValueError(f"snapshot index is a {type(cpu).__name__}, not an IndexIDMap")
        self.nlist = nlist
        self.trained_at = trained_at
        inner = faiss.downcast_index(cpu.index)
        if isinstance(inner, faiss.IndexIVF) and inner.direct_map.type != faiss.DirectMap.Array:
            inner.set_direct_map_type(faiss.DirectMap.Array)  # a snapshot taken on a GPU has none
        self.max_sq_norm = _max_sq_norm(inner, self.dim)
        self.index = self._place(cpu)
        held = self._id_view()
        self._ids_sorted, self._by_id, self._sq_norms = bool((np.diff(held) > 0).all()), None, None
        self._half = None
        if self.spec.kind == IndexKind.HNSW:
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.spec.ef_search
        self._apply_search_params()


def flat_rows(inner: faiss.Index) -> np.ndarray | None:
    """A flat index's vectors (HNSW: its storage's) as a float32 (ntotal, dim) view, else None."""
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if not isinstance(inner, faiss.IndexFlat):
        return None
    if inner.ntotal == 0:
        return np.zeros((0, inner.d), dtype=np.float32)
    return faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)


def _max_sq_norm(inner: faiss.Index, dim: int, chunk: int = 8192) -> float:
    """Largest squared norm of the vectors a CPU index holds (flat, HNSW or IVF-flat), float."""
    flat = flat_rows(inner)
    if flat is not None:
        blocks = (flat[lo:lo + chunk] for lo in range(0, len(flat), chunk))
    else:
        ivf = faiss.extract_index_ivf(inner)
        lists = ivf.invlists
        blocks = (
            faiss.rev_swig_ptr(lists.get_codes(i), lists.list_size(i) * ivf.code_size).view(np.float32)
            .reshape(-1, dim)
            for i in range(ivf.nlist) if lists.list_size(i)
        )
    best = 0.0
    for block in blocks:
        if len(block):
            v = block.astype(np.float64)
            best = max(best, float(np.einsum("ij,ij->i", v, v).max()))
    return best


# Rows beyond which a lone query's nearest are picked under a sample's threshold instead of by a partition
# of every row (one comparison a row instead of a selection; with the ranking key above, a lone search of
# 100k x 128 in-process took 1.09 to 1.10 ms against 1.21 to 1.22 with a full partition, median of 200 probes).
SAMPLED_SELECTION_ROWS = 16_384
# The deepest lone search (depth plus margin) that the float16 copy answers (a sixteenth of a chunk).
SCREEN_MAX_DEPTH = 1_024
_SAMPLE = 4_096


def _nearest_positions(key: np.ndarray, take: int) -> np.ndarray:
    """Positions of the `take` smallest values of `key` (float32, 1-d), ascending by value then position
    (which of several values tied with the last one taken are in is not specified, as with FAISS).

    On long arrays a strided sample gives a threshold that about ten times `take` values (expected) lie
    under; only those are ranked. When fewer than `take` do, every value is partitioned: the answer is
    the same either way, because with at least `take` values under the threshold the `take` smallest
    (and anything tied with the last of them) all lie under it."""
    n = len(key)
    if take >= n:
        cand = np.arange(n)
    else:
        cand = None
        if n > SAMPLED_SELECTION_ROWS:
            sample = key[::n // _SAMPLE]
            rank = min(len(sample) - 1, int(np.ceil(10 * take * len(sample) / n)) + 8)
            cand = np.flatnonzero(key < np.partition(sample, rank)[rank])
            if len(cand) < take:
                cand = None
        if cand is None:
            cand = np.argpartition(key, take - 1)[:take]
        elif len(cand) > take:
            cand = cand[np.argpartition(key[cand], take - 1)[:take]]
    return cand[np.lexsort((cand, key[cand]))]
