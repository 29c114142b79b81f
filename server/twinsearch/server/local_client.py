"""`LocalClient`: the twinsearch API in-process, on the same engine the gRPC server runs.

    from twinsearch.client import LocalClient        # imported lazily: needs torch and faiss
    with LocalClient("./data") as c:                 # a folder: SQLite store and index snapshots
        c.create_gallery("staff", exist_ok=True)
        ...

Same methods, same arguments, same answers and same exceptions as `twinsearch.client.Client`: the
public methods (in `twinsearch.client.base.BaseClient`) normalise inputs identically for both, and
the engine builds its answers from the same dataclasses the remote client decodes. Congruence tests
run one scenario through both and compare. Calls have no deadline (nothing travels).

Only one process may open a data folder at a time: a LocalClient and a server on the same folder
would both write it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from twinsearch.client import types as t
from twinsearch.client.base import BaseClient
from twinsearch.client.errors import FailedPrecondition

from .engine import Engine
from .settings import EngineSettings


class LocalClient(BaseClient):
    """The twinsearch API on an in-process engine over the data folder `path`.

    `model`: a model file, or None for the default model shipped with the package; `models`: several,
    as {name: model file} (the first the default) or a list of (name or None, file). `settings`: the
    engine's limits and tuning (EngineSettings). `engine`: an already open Engine to wrap instead
    (then `path`, `model`, `models` and `settings` are ignored and `close()` leaves the engine open).
    """

    def __init__(self, path: str | Path | None = None, model: str | Path | None = None, *,
                 settings: EngineSettings | None = None, engine: Engine | None = None, models=None):
        if engine is None:
            if path is None:
                raise ValueError("LocalClient needs a data folder (path) or an open engine")
            if isinstance(models, dict):
                models = list(models.items())
            self.engine = Engine.open(Path(path), None if model is None else Path(model),
                                      settings or EngineSettings(), models=models)
            self._owns_engine = True
        else:
            self.engine = engine
            self._owns_engine = False
        self.path = None if path is None else Path(path)

    def __repr__(self) -> str:
        return f"LocalClient({str(self.path)!r})"

    def close(self) -> None:
        """Close the engine (when this client opened it); later calls are FailedPrecondition, as a closed
        `Client`'s are."""
        if isinstance(self.engine, _ClosedEngine):
            return
        if self._owns_engine:
            self.engine.close()
        self.engine = _ClosedEngine(f"{self!r} is closed: open a new one")

    # ----------------------------------------------------------------------------- primitives

    def _info(self) -> t.ServerInfo:
        return self.engine.info()

    def _embed(self, images, *, model) -> np.ndarray:
        return self.engine.embed(images, model=model)

    def _verify(self, pairs, *, threshold, target_far, model) -> list[t.Verification]:
        return self.engine.verify(pairs, threshold=threshold, target_far=target_far, model=model)

    def _create_gallery(self, name, *, index, scoring, mean_k, threshold, model, keep_images,
                        cohort_threshold) -> t.GalleryInfo:
        return self.engine.create_gallery(name, index=index, scoring=scoring, mean_k=mean_k, threshold=threshold,
                                          model=model, keep_images=keep_images, cohort_threshold=cohort_threshold)

    def _migrate_gallery(self, name, model) -> t.MigrationStart:
        return self.engine.migrate_gallery(name, model)

    def _cancel_migration(self, name) -> t.GalleryInfo:
        return self.engine.cancel_migration(name)

    def _update_gallery(self, name, *, threshold, cohort_threshold, scoring, mean_k) -> t.GalleryInfo:
        return self.engine.update_gallery(name, threshold=threshold, cohort_threshold=cohort_threshold,
                                          scoring=scoring, mean_k=mean_k)

    def _get_gallery(self, name) -> t.GalleryInfo:
        return self.engine.get_gallery(name)

    def _list_galleries(self) -> list[t.GalleryInfo]:
        return self.engine.list_galleries()

    def _gallery_page(self, *, page_size, page_token) -> t.GalleryPage:
        return self.engine.gallery_page(page_size=page_size, page_token=page_token)

    def _delete_gallery(self, name) -> int:
        return self.engine.delete_gallery(name)

    def _enroll(self, gallery, items, *, skip_invalid) -> t.EnrollResult:
        return self.engine.enroll(gallery, items, skip_invalid=skip_invalid)

    def _enroll_batches(self, gallery, batches, *, max_in_flight) -> Iterator[tuple[list[t.EnrollItem], t.EnrollResult]]:
        # In-process there is nothing to overlap with: one batch at a time, in order.
        for items in batches:
            yield items, self.engine.enroll(gallery, items, skip_invalid=True)

    def _find_items(self, gallery, client_ids) -> list[t.Enrolled]:
        return self.engine.find_items(gallery, client_ids)

    def _delete(self, gallery, *, ids, client_ids, label) -> int:
        return self.engine.delete(gallery, ids=ids, client_ids=client_ids, label=label)

    def _list_classes(self, gallery, *, page_size, page_token) -> t.ClassPage:
        return self.engine.list_classes(gallery, page_size=page_size, page_token=page_token)

    def _identify(self, gallery, probes, *, k, scoring, mean_k, threshold, target_far, labels, skip_invalid):
        return self.engine.identify(gallery, probes, k=k, scoring=scoring, mean_k=mean_k, threshold=threshold,
                                    target_far=target_far, labels=labels, skip_invalid=skip_invalid)

    def _verify_class(self, gallery, queries, *, scoring, mean_k, threshold, target_far, cohort):
        return self.engine.verify_class(gallery, queries, scoring=scoring, mean_k=mean_k, threshold=threshold,
                                        target_far=target_far, cohort=cohort)

    def _search(self, gallery, probes, *, k, labels):
        return self.engine.search(gallery, probes, k=k, labels=labels)


class _ClosedEngine:
    """A closed LocalClient's engine: every use is FailedPrecondition with `message`."""

    def __init__(self, message: str):
        self._message = message

    def __getattr__(self, name: str):
        raise FailedPrecondition(self._message)
