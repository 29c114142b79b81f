"""A lone query against a large flat index picks candidates from a float16 copy of the rows
(`halfscreen`): the answer must stay FAISS's, whether the copy proves it or the search falls back to the
float32 rows, and the copy must follow the index through compaction, additions and snapshots."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from twinsearch.client.types import IndexSpec
from twinsearch.server import halfscreen
from twinsearch.server.index import IndexParams, VectorIndex
from twinsearch.server.scoring import F32_EPS

from .conftest import DIM, unit

ROWS = 3_000


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 512 rows, so that a 3,000-row index has six of them, the last one short."""
    monkeypatch.setattr(halfscreen, "CHUNK_ROWS", 512)


def _index(vectors: np.ndarray, first_id: int = 1, **params) -> VectorIndex:
    index = VectorIndex(DIM, IndexSpec(), IndexParams(**{"half_screen_rows": 1_000, **params}), gpu=None)
    index.add(vectors, np.arange(first_id, first_id + len(vectors), dtype=np.int64))
    return index


def _scaled(rng, n: int) -> np.ndarray:
    return unit(rng.normal(size=(n, DIM))) * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)


def _same_as_faiss(index: VectorIndex, queries: np.ndarray, depth: int, ties: bool = False) -> None:
    """FAISS's ids and distances; with `ties`, rows at one distance may come in another order or be
    others of the tied ones, as with FAISS itself, so only the distances and their rows are compared."""
    slack = (2 * DIM + 16) * F32_EPS * (1.0 + 4.0)  # unseen_bound's slack: |q| = 1, |x| <= 2
    for q in queries:
        dist, ids = index.search(q[None], depth)
        want_dist, want_ids = index.index.search(np.ascontiguousarray(q[None], dtype=np.float32), depth)
        np.testing.assert_allclose(dist, want_dist, rtol=0, atol=slack)
        if not ties:
            np.testing.assert_array_equal(ids, want_ids)
        else:
            rows = index.vectors(ids[0]).astype(np.float64)
            np.testing.assert_allclose(((rows - q) ** 2).sum(axis=1), dist[0], rtol=0, atol=slack)


def _screened(index: VectorIndex, monkeypatch) -> list[bool]:
    """Record, for every lone search from now on, whether the float16 copy answered it."""
    answered = []
    inner = VectorIndex._screened
    monkeypatch.setattr(VectorIndex, "_screened",
                        lambda self, *a: (lambda r: answered.append(r is not None) or r)(inner(self, *a)))
    return answered


def test_the_copy_answers_as_faiss_does(rng, monkeypatch):
    x = _scaled(rng, ROWS)
    index = _index(x)
    answered = _screened(index, monkeypatch)
    near = unit(x[rng.choice(ROWS, 15)] + 0.02 * rng.normal(size=(15, DIM)))
    _same_as_faiss(index, np.concatenate([near, unit(rng.normal(size=(15, DIM)))]), 40)
    assert answered == [True] * 30 and index.screen_fallbacks == 0
    assert index._half.ntotal == ROWS and len(index._half._chunks) == 6


def test_no_row_left_out_is_nearer_than_the_bound(rng):
    """The bound the copy gives for rows it did not return holds for every one of them, in float64."""
    x = _scaled(rng, ROWS) * np.float32(7.0)
    half = halfscreen.HalfRows(DIM)
    half.extend(x[:1_700])
    half.extend(x[1_700:])  # appended across a chunk boundary
    rounded = x.astype(np.float16).astype(np.float64)
    assert half.error >= np.linalg.norm(rounded - x, axis=1).max()
    for q in np.concatenate([x[:5] + 0.01, 7 * unit(rng.normal(size=(5, DIM)))]):
        found = half.candidates(q.astype(np.float32), 20, float((x.astype(np.float64) ** 2).sum(1).max()))
        assert len(found.positions) == 20 and len(set(found.positions.tolist())) == 20
        # the 20 nearest by float16 distance, of all rows
        half_dist = ((x.astype(np.float16).astype(np.float64) - q) ** 2).sum(1)
        assert half_dist[found.positions].max() <= np.sort(half_dist)[20] * (1 + 1e-5)
        rest = np.setdiff1d(np.arange(ROWS), found.positions)
        true = np.linalg.norm(x[rest].astype(np.float64) - q, axis=1)
        assert true.min() >= found.lower > 0
    short = halfscreen.HalfRows(DIM)  # a last chunk of 10 rows, fewer than the depth: all of them come back
    short.extend(x[:1_034])
    found = short.candidates(x[1_030] + np.float32(0.01), 20, 49.0 * 4)
    assert len(found.positions) == 20 and 1_030 in found.positions.tolist()
    rest = np.setdiff1d(np.arange(1_034), found.positions)
    assert np.linalg.norm(x[rest].astype(np.float64) - (x[1_030] + np.float32(0.01)), axis=1).min() >= found.lower
    whole = halfscreen.HalfRows(DIM)
    whole.extend(x[:15])  # one chunk, all returned: nothing is left out
    assert whole.candidates(x[0], 20, 49.0 * 4).lower == np.inf


def test_ties_fall_back_to_the_float32_rows(rng, monkeypatch):
    """Rows at one distance: the copy cannot prove which belong among the nearest, so the search scans
    the float32 rows, with the same answer as FAISS."""
    x = np.repeat(unit(rng.normal(size=(1, DIM))), ROWS, axis=0)
    x[::7] = _scaled(rng, len(x[::7]))
    index = _index(x)
    answered = _screened(index, monkeypatch)
    _same_as_faiss(index, unit(x[1:4] + 0.05 * rng.normal(size=(3, DIM))), 30, ties=True)
    assert answered == [False] * 3 and index.screen_fallbacks == 3


def test_rows_beyond_float16_keep_the_float32_search(rng, monkeypatch):
    x = _scaled(rng, ROWS)
    x[10, 0] = 70_000.0  # over float16's largest value
    index = _index(x)
    answered = _screened(index, monkeypatch)
    _same_as_faiss(index, unit(rng.normal(size=(3, DIM))), 10)
    assert answered == [False] * 3 and not index._half.usable


def test_small_indexes_and_deep_searches_keep_the_float32_search(rng, monkeypatch):
    small = _index(_scaled(rng, 900))  # under half_screen_rows
    off = _index(_scaled(rng, ROWS), half_screen_max_rows=0)
    grown = _index(_scaled(rng, ROWS), half_screen_max_rows=ROWS)
    answered = _screened(small, monkeypatch)
    q = unit(rng.normal(size=(2, DIM)))
    _same_as_faiss(small, q, 10)
    _same_as_faiss(off, q, 10)
    assert answered == [False, False] * 2 and small._half is None and off._half is None
    _same_as_faiss(grown, q, 10)
    assert answered[-2:] == [True, True] and grown._half.ntotal == ROWS
    grown.add(_scaled(rng, 10), np.arange(10_000, 10_010, dtype=np.int64))  # past half_screen_max_rows
    _same_as_faiss(grown, q, 10)
    assert answered[-2:] == [False, False] and grown._half is None  # its memory let go
    deep = _index(_scaled(rng, ROWS))
    _same_as_faiss(deep, q, 1_000, ties=True)  # with the margin, past SCREEN_MAX_DEPTH
    assert deep._half is None


def test_the_copy_follows_compaction_additions_and_snapshots(tmp_path, rng, monkeypatch):
    x = _scaled(rng, ROWS)
    index = _index(x)
    answered = _screened(index, monkeypatch)
    q = np.concatenate([unit(rng.normal(size=(4, DIM))), unit(x[2_500:2_504])])
    _same_as_faiss(index, q, 20)
    index.compact(np.arange(1, 601, dtype=np.int64))  # rows move up: a kept copy would be stale
    index.add(_scaled(rng, 800), np.arange(10_000, 10_800, dtype=np.int64))  # longer than before
    _same_as_faiss(index, q, 20)
    assert index._half.ntotal == ROWS + 200
    index.add(_scaled(rng, 300), np.arange(20_000, 20_300, dtype=np.int64))  # appended to the copy
    _same_as_faiss(index, q, 20)
    assert index._half.ntotal == ROWS + 500
    other = _index(_scaled(rng, 2_000), first_id=50_000)
    other.serialize_to(str(tmp_path / "snap.faiss"))
    index.load_from(str(tmp_path / "snap.faiss"), nlist=0, trained_at=0)
    _same_as_faiss(index, q, 20)
    assert index._half.ntotal == 2_000 and (index.search(q[:1], 10)[1] >= 50_000).all()
    assert all(answered)


def test_a_search_while_another_builds_the_copy_scans_the_float32_rows(rng, monkeypatch):
    index = _index(_scaled(rng, ROWS))
    answered = _screened(index, monkeypatch)
    q = unit(rng.normal(size=(1, DIM)))
    with index._half_lock:  # held as a search building the copy holds it
        _same_as_faiss(index, q, 10)
    assert answered == [False] and index._half is None
    done = threading.Event()
    threading.Thread(target=lambda: (_same_as_faiss(index, q, 10), done.set())).start()
    assert done.wait(30) and answered == [False, True]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="half_screen_rows"):
        IndexParams(half_screen_rows=-1)
    with pytest.raises(ValueError, match="half_screen_max_rows"):
        IndexParams(half_screen_max_rows=-1)
    with pytest.raises(ValueError, match="half_screen_margin"):
        IndexParams(half_screen_margin=-5)
