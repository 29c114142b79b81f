"""A gallery's classes and live items in numpy arrays: no Python object per item.

- classes: label per slot, exemplar count per slot, and the class mean (float32, (slots, dim)) kept
  up to date incrementally on enroll and delete; the prototype is the mean re-normalised to unit
  length, so only the means and their norms are stored.
- items: the sorted int64 ids of the live items and the class slot of each (int32). SQLite ids only
  grow, so enrolling appends and the arrays stay sorted; lookups are binary searches.

Slots of emptied classes are kept (count 0, skipped by queries) until the next rebuild, so slot
numbers stay valid while a gallery is open.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    if need <= arr.shape[0]:
        return arr
    cap = max(need, 2 * arr.shape[0], 16)
    out = np.zeros((cap, *arr.shape[1:]), dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class ClassTable:
    def __init__(self, dim: int):
        self.dim = dim
        self.labels: list[str] = []
        self.slot_of: dict[str, int] = {}
        self._counts = np.zeros(0, dtype=np.int64)
        self._means = np.zeros((0, dim), dtype=np.float32)
        self._n_items = 0
        self._item_ids = np.zeros(0, dtype=np.int64)
        self._item_slot = np.zeros(0, dtype=np.int32)

    # ------------------------------------------------------------------ views
    @property
    def n_slots(self) -> int:
        return len(self.labels)

    @property
    def counts(self) -> np.ndarray:
        """Exemplars per slot, int64 (n_slots,)."""
        return self._counts[: self.n_slots]

    @property
    def means(self) -> np.ndarray:
        """Class means, float32 (n_slots, dim); rows of empty classes are zero."""
        return self._means[: self.n_slots]

    @property
    def item_ids(self) -> np.ndarray:
        """Sorted int64 ids of the live items."""
        return self._item_ids[: self._n_items]

    @property
    def item_slots(self) -> np.ndarray:
        return self._item_slot[: self._n_items]

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def max_id(self) -> int:
        return int(self._item_ids[self._n_items - 1]) if self._n_items else 0

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.counts > 0)

    @property
    def n_classes(self) -> int:
        return int(np.count_nonzero(self.counts))

    def slots_of_ids(self, ids: np.ndarray) -> np.ndarray:
        """Class slot per id (int64 array of any shape); -1 where the id is not a live item (or is -1)."""
        flat = ids.ravel()
        pos = np.searchsorted(self.item_ids, flat)
        pos = np.minimum(pos, max(self._n_items - 1, 0))
        if self._n_items == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        hit = self.item_ids[pos] == flat
        out = np.where(hit, self.item_slots[pos], -1).astype(np.int64)
        return out.reshape(ids.shape)

    def slots_of_labels(self, labels: Sequence[str]) -> np.ndarray:
        """Slots of the labels that name a live class (unknown or emptied labels are left out)."""
        slots = [self.slot_of[lb] for lb in labels if lb in self.slot_of]
        arr = np.array(sorted(set(slots)), dtype=np.int64)
        return arr[self.counts[arr] > 0] if len(arr) else arr

    # ------------------------------------------------------------------ changes
    def _slots_for(self, labels: Sequence[str]) -> np.ndarray:
        out = np.empty(len(labels), dtype=np.int64)
        for i, label in enumerate(labels):
            slot = self.slot_of.get(label)
            if slot is None:
                slot = len(self.labels)
                self.labels.append(label)
                self.slot_of[label] = slot
            out[i] = slot
        self._counts = _grow(self._counts, self.n_slots)
        self._means = _grow(self._means, self.n_slots)
        return out

    def add(self, ids: np.ndarray, labels: Sequence[str], vectors: np.ndarray) -> None:
        """Record new items: ids int64 (m,), all greater than any held; vectors float32 (m, dim)."""
        if not len(ids):
            return
        if self._n_items and ids.min() <= self.max_id:
            raise ValueError("item ids must grow: SQLite AUTOINCREMENT gives increasing ids")
        slots = self._slots_for(labels)
        n = self._n_items + len(ids)
        self._item_ids = _grow(self._item_ids, n)
        self._item_slot = _grow(self._item_slot, n)
        order = np.argsort(ids, kind="stable")
        self._item_ids[self._n_items:n] = ids[order]
        self._item_slot[self._n_items:n] = slots[order]
        self._n_items = n
        self._update_means(slots, vectors, +1)

    def remove(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Forget live items: ids int64 (m,) and their stored vectors float32 (m, dim), same order."""
        if not len(ids):
            return
        slots = self.slots_of_ids(ids)
        if (slots < 0).any():
            raise KeyError(f"item {int(ids[slots < 0][0])} is not live")
        pos = np.searchsorted(self.item_ids, ids)
        keep = np.ones(self._n_items, dtype=bool)
        keep[pos] = False
        n = int(keep.sum())
        self._item_ids[:n] = self.item_ids[keep]
        self._item_slot[:n] = self.item_slots[keep]
        self._n_items = n
        self._update_means(slots, vectors, -1)

    def _update_means(self, slots: np.ndarray, vectors: np.ndarray, sign: int) -> None:
        # Sum the batch per class in float64, then fold into the stored means:
        # new_mean = (old_mean * old_count + sign * batch_sum) / new_count.
        order = np.argsort(slots, kind="stable")
        s_sorted = slots[order]
        uniq, start = np.unique(s_sorted, return_index=True)
        batch_sums = np.add.reduceat(vectors[order].astype(np.float64), start, axis=0)
        batch_counts = np.diff(np.append(start, len(s_sorted)))
        old = self._counts[uniq]
        new = old + sign * batch_counts
        if (new < 0).any():
            raise ValueError("class count would go below zero")
        total = self._means[uniq].astype(np.float64) * old[:, None] + sign * batch_sums
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(new[:, None] > 0, total / np.maximum(new, 1)[:, None], 0.0)
        self._means[uniq] = means.astype(np.float32)
        self._counts[uniq] = new

    # ------------------------------------------------------------------ snapshot state
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "labels": np.array(self.labels, dtype=str) if self.labels else np.zeros(0, dtype="<U1"),
            "counts": self.counts.copy(),
            "means": self.means.copy(),
            "item_ids": self.item_ids.copy(),
            "item_slots": self.item_slots.copy(),
        }

    @classmethod
    def from_arrays(cls, dim: int, arrays: dict[str, np.ndarray]) -> ClassTable:
        table = cls(dim)
        table.labels = [str(x) for x in arrays["labels"]]
        table.slot_of = {label: i for i, label in enumerate(table.labels)}
        if len(table.slot_of) != len(table.labels):
            raise ValueError("duplicate labels in snapshot")
        table._counts = np.asarray(arrays["counts"], dtype=np.int64).copy()
        table._means = np.asarray(arrays["means"], dtype=np.float32).reshape(-1, dim).copy()
        table._item_ids = np.asarray(arrays["item_ids"], dtype=np.int64).copy()
        table._item_slot = np.asarray(arrays["item_slots"], dtype=np.int32).copy()
        table._n_items = len(table._item_ids)
        n = table.n_slots
        if table._counts.shape != (n,) or table._means.shape[0] != n or table._item_slot.shape != (table._n_items,):
            raise ValueError("inconsistent class arrays in snapshot")
        if table._n_items and (np.diff(table._item_ids) <= 0).any():
            raise ValueError("snapshot item ids are not increasing")
        if int(table._counts.sum()) != table._n_items:
            raise ValueError("snapshot class counts do not add up to its items")
        return table
