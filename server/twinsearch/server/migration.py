"""Moving a gallery to another model in the background.

`Migrator.start(gallery, fingerprint)` runs one thread per gallery being migrated. It repeats: take
the next items that have no vector from the new model yet (`GalleryStore.migration_todo`), read their
kept images, embed them with the new model through the engine's encoder batcher (a batch of
`EngineSettings.migration_batch` at a time, so that calls waiting for the encoder go between two
batches), store the vectors (`add_migrated`, one transaction per batch). When no item is left it asks
the store to switch (`finish_migration`), which commits the new model and swaps the new index in.

The gallery answers with its old model all along; enrollments made meanwhile are embedded with both
models by the engine and deletions remove both vectors, so nothing is missed and the switch leaves
the gallery exactly as if it had been enrolled with the new model. Everything a migration stored is
in SQLite: after a restart the engine starts it again and it goes on where it stopped. A migration
whose model the server does not hold waits (the engine reports it at start-up). An item that cannot
be embedded again (its kept image missing or unreadable by the new model's preprocessing) stops the
migration with the reason (FAILED, shown by GetGallery); migrating again starts it over. A cancelled
migration (`GalleryStore.cancel_migration`) is gone from the store: the thread's next batch is refused
(ModelChanged) and it ends.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from twinsearch.client.errors import NotFound, TwinsearchError, Unavailable

from . import deadlines
from . import images as kept
from .validation import ModelChanged

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


class Migrator:
    """The background migrations of one engine."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, gallery: str, fingerprint: str) -> None:
        """Run the migration of `gallery` to model `fingerprint` unless one runs already; it waits
        while the server does not hold that model."""
        if self._engine.models.by_fingerprint(fingerprint) is None:
            return  # paused: reported at start-up, resumed by a restart with the model
        with self._lock:
            running = self._threads.get(gallery)
            if self._stop.is_set() or (running is not None and running.is_alive()):
                return
            thread = threading.Thread(target=self._run, args=(gallery, fingerprint), daemon=True,
                                      name=f"twinsearch-migrate-{gallery}")
            self._threads[gallery] = thread
            thread.start()

    def running(self, gallery: str) -> bool:
        with self._lock:
            thread = self._threads.get(gallery)
        return thread is not None and thread.is_alive()

    def wait(self, gallery: str, timeout: float | None = None) -> bool:
        """Wait for the migration thread of `gallery` to end; True when it has (or none runs)."""
        with self._lock:
            thread = self._threads.get(gallery)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Stop every migration after its current batch (what is stored stays; a restart resumes)."""
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ the work
    def _run(self, gallery: str, fingerprint: str) -> None:
        engine = self._engine
        store = engine.store
        entry = engine.models.by_fingerprint(fingerprint)
        batch = engine.settings.migration_batch
        log.info("gallery %r: migrating to model %s", gallery, entry.name)
        try:
            while not self._stop.is_set():
                todo = store.migration_todo(gallery, batch)
                if not todo:
                    if store.finish_migration(gallery, fingerprint):
                        return
                    continue  # items enrolled meanwhile without a new vector: not possible, but look again
                ids, payloads = self._read(gallery, todo)
                if len(ids):
                    store.add_migrated(gallery, fingerprint, ids, self._embed(entry, ids, payloads))
        except (ModelChanged, NotFound, Unavailable):
            # Deleted, switched, restarted into another migration, or the engine is closing.
            log.info("gallery %r: migration to model %s ended", gallery, entry.name)
        except _ItemError as exc:
            self._fail(gallery, fingerprint, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded and shown, never lost in a thread
            log.exception("gallery %r: migration to model %s failed", gallery, entry.name)
            self._fail(gallery, fingerprint, f"{type(exc).__name__}: {exc}")

    def _read(self, gallery: str, todo: list[tuple[int, str | None]]) -> tuple[np.ndarray, list]:
        """The ids and kept payloads of `todo`, less the items deleted since it was listed (a deletion
        removes the image of its last item)."""
        store = self._engine.store
        ids, payloads, unreadable = [], [], {}
        for item_id, key in todo:
            try:
                if key is None:
                    raise FileNotFoundError("it has no kept image")
                payloads.append(kept.decode(store.kept_image(key)))
                ids.append(item_id)
            except (OSError, ValueError) as exc:
                unreadable[item_id] = exc
        if unreadable:
            alive = store.live_items(gallery, list(unreadable))
            for item_id in sorted(alive):
                raise _ItemError(item_id, f"its kept image cannot be read ({unreadable[item_id]})")
        return np.array(ids, dtype=np.int64), payloads

    def _embed(self, entry, ids: np.ndarray, payloads: list) -> np.ndarray:
        engine = self._engine
        names = [f"item {int(i)}" for i in ids]
        prepared = engine._prepare(payloads, names, entry, collect_failures=True)
        if prepared.failed:
            position, reason = prepared.failed[0]
            raise _ItemError(int(ids[position]), f"the new model cannot read its kept image ({reason})")
        return engine._embed_prepared(prepared, deadlines.NO_DEADLINE, entry)

    def _fail(self, gallery: str, fingerprint: str, reason: str) -> None:
        try:
            self._engine.store.fail_migration(gallery, fingerprint, reason)
        except TwinsearchError:
            log.exception("gallery %r: recording a failed migration failed", gallery)


class _ItemError(Exception):
    def __init__(self, item_id: int, reason: str):
        super().__init__(f"item {item_id}: {reason}")
