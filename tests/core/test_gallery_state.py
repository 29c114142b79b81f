"""A Gallery owns its state: the store changes it through the gallery's methods, and its fields
cannot be assigned from outside."""

from __future__ import annotations

import pytest

from twinsearch.client.errors import NotFound

from .conftest import DIM, clustered

STATE = ("index", "classes", "dirty", "changes", "needs_new_index", "deleted", "retired", "migration",
         "migrated")


def test_gallery_state_is_read_only_outside_the_gallery(store, rng):
    store.create_gallery("g", fingerprint="m1", dim=DIM)
    g = store._gallery("g")
    for name in STATE:
        with pytest.raises(AttributeError):
            setattr(g, name, getattr(g, name))


def test_the_store_changes_a_gallery_through_its_methods(store, rng):
    x, labels = clustered(rng, 3, 2)
    store.create_gallery("g", fingerprint="m1", dim=DIM, keep_images=True)
    store.enroll("g", labels, x, images=[b"\x89PNG fake"] * len(x))
    g = store._gallery("g")
    assert g.dirty and g.changes == len(x) and g.item_count == len(x) and g.class_count == 3
    assert g.class_counts() == {lb: 2 for lb in sorted(set(labels))} and g.has_class(labels[0])
    store.start_migration("g", fingerprint="m2", dim=DIM)
    assert g.migration.fingerprint == "m2" and g.migrated == 0
    store.add_migrated("g", "m2", [1], x[:1])
    assert g.migrated == 1
    store.fail_migration("g", "m2", "broken")
    assert g.migration.error == "broken"
    store.delete_gallery("g")
    assert g.deleted
    with pytest.raises(NotFound):
        store.get_gallery("g")
