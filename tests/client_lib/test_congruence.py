"""Congruence: one scenario through Client (gRPC, real server) and LocalClient (in-process), compared.

Both run the same engine on the same tiny model over fresh data folders, so every answer must be the
same: dataclasses equal field by field (distances are doubles on the wire), numpy arrays equal, and
errors of the same class with the same details.
"""

import io

import numpy as np
from PIL import Image

from twinsearch.client import TwinsearchError


def scenario(c, png, unit_vectors, tree) -> list:
    """Every method with the argument forms callers use; returns what each call answered."""
    out: list = []

    def record(name, fn, *args, **kwargs):
        try:
            value = fn(*args, **kwargs)
        except TwinsearchError as exc:
            value = ("error", type(exc).__name__, exc.details, exc.field)
        if isinstance(value, np.ndarray):
            value = ("array", value.dtype.str, value.shape, value.tobytes())
        out.append((name, value))

    images = [png(i) for i in range(6)]
    vectors = unit_vectors(4, seed=9)
    pil = Image.open(io.BytesIO(images[5]))
    pixels = np.asarray(pil)
    record("info", lambda: c.info().model)
    record("create", c.create_gallery, "g", index="exact", scoring="nearest")
    record("create hnsw", c.create_gallery, "h", index="hnsw", scoring="mean_of_k", mean_k=2, threshold=0.7)
    record("create again", c.create_gallery, "g")
    record("create exist_ok", c.create_gallery, "g", exist_ok=True)
    record("identify empty", c.identify, "g", images[0])
    record("enroll images", c.enroll, "g", ["a", "a", "b"], images[:3], ids=["a1", "a2", "b1"],
           metadata=[{"n": "1"}, None, {"n": "3"}])
    record("enroll pil and pixels", c.enroll, "g", "c", [pil, pixels], ids=["c1", "c2"])
    record("enroll vectors", c.enroll, "g", ["d", "e"], list(vectors[:2]), metadata={"kind": "vector"})
    record("enroll again", c.enroll, "g", ["a", "a"], images[:2], ids=["a1", "a2"])
    record("enroll another image", c.enroll, "g", "a", images[5], ids=["a1"])
    record("enroll other pixels", c.enroll, "g", "c", pixels[::-1], ids=["c2"], skip_invalid=True)
    record("enroll same pil", c.enroll, "g", "c", pil, ids=["c1"])
    record("enroll skip invalid", c.enroll, "g", "f", [images[4], b"junk"], ids=["f1", "f2"], skip_invalid=True)
    record("enroll invalid", c.enroll, "g", "f", [images[4], b"junk"])
    record("enroll h", c.enroll, "h", ["x", "x", "y"], list(unit_vectors(3, seed=10)))
    record("bulk", lambda: _bulk_figures(c.enroll_folder("h", tree, batch_size=2)))
    record("embed one", c.embed, images[0])
    record("embed many", c.embed, [images[1], pixels, pil])
    record("embed empty bytes", c.embed, [images[1], b""])
    record("embed two channels", c.embed, np.zeros((8, 8, 2), np.uint8))
    record("verify", c.verify, images[0], images[1])
    record("verify pairs", c.verify, [images[0], vectors[0]], [images[2], vectors[1]], threshold=0.5)
    record("verify far", c.verify, images[0], images[3], target_far=0.01)
    for scoring in (None, "nearest", "prototype", "mean_of_k"):
        record(f"identify {scoring}", c.identify, "g", [images[0], images[3], vectors[0]], k=3, scoring=scoring)
    record("identify one", c.identify, "g", images[1])
    record("identify threshold", c.identify, "g", images[1], threshold=0.0)
    record("identify labels", c.identify, "g", images[1], labels=["b", "c"])
    record("identify unknown label", c.identify, "g", images[1], labels=["zz"])
    record("identify h", c.identify, "h", [vectors[0], vectors[1]], k=2)
    record("verify_class", c.verify_class, "g", [images[0], images[3]], ["a", "b"])
    record("verify_class one", c.verify_class, "g", images[0], "c", target_far=0.01)
    record("verify_class unknown", c.verify_class, "g", images[0], "nobody")
    record("search", c.search, "g", [images[0], vectors[1]], k=4)
    record("search labels", c.search, "g", images[0], k=2, labels=["a"])
    record("find items", c.find_items, "g", ["b1", "nobody", "a1", "b1"])
    record("find one", c.find_items, "g", "c2")
    record("find in unknown gallery", c.find_items, "nope", ["a1"])
    record("classes", c.classes, "g")
    record("class page", c.class_page, "g", page_size=2)
    record("galleries", c.galleries)
    record("gallery page", c.gallery_page, page_size=1)
    record("gallery page 2", lambda: c.gallery_page(page_size=1, page_token=c.gallery_page(page_size=1).next_page_token))
    record("gallery page bad token", c.gallery_page, page_token="!!")
    record("identify both thresholds", c.identify, "g", images[1], threshold=0.5, target_far=0.01)
    record("identify huge mean_k", c.identify, "g", images[1], scoring="mean_of_k", mean_k=10**6)
    record("delete ids", c.delete, "g", ids=[1])
    record("delete client ids", c.delete, "g", client_ids=["c1"])
    record("delete label", c.delete, "g", label="b")
    record("delete unknown label", c.delete, "g", label="nobody")
    record("get", c.get_gallery, "g")
    record("update", c.update_gallery, "h", threshold=None, cohort_threshold=0.5, scoring="prototype")
    record("update bad", c.update_gallery, "h", cohort_threshold=3.0)
    record("update unknown", c.update_gallery, "nope", threshold=0.5)
    record("cohort from the gallery", c.verify_class, "h", vectors[0], "x", cohort=True)
    record("cancel without a migration", c.cancel_migration, "h")
    record("cancel unknown", c.cancel_migration, "nope")
    record("bad k", c.search, "g", images[0], k=-1)
    record("huge k", c.search, "g", images[0], k=10**6)
    record("bad name", c.create_gallery, "no spaces allowed")
    record("bad image", c.embed, [images[0], b"\x89PNG garbage"])
    record("delete gallery", c.delete_gallery, "g")
    record("get deleted", c.get_gallery, "g")
    record("galleries after", c.galleries)
    return out


def _bulk_figures(report):
    return (report.found, report.sent, report.stored, report.skipped, report.failures)


def test_client_and_local_client_answer_the_same(client, local_client, png, unit_vectors, tmp_path):
    tree = tmp_path / "tree"
    for label in ("p", "q"):
        (tree / label).mkdir(parents=True)
        for i in range(3):
            (tree / label / f"{i}.png").write_bytes(png(100 + i + (10 if label == "q" else 0)))
    (tree / "q" / "broken.png").write_bytes(b"not a png")
    remote = scenario(client, png, unit_vectors, tree)
    local = scenario(local_client, png, unit_vectors, tree)
    assert [name for name, _ in remote] == [name for name, _ in local]
    for (name, a), (_, b) in zip(remote, local, strict=True):
        assert a == b, f"{name}: remote {a!r} != local {b!r}"
    # The scenario reached both the happy paths and the errors.
    errors = {name for name, value in remote if isinstance(value, tuple) and value[:1] == ("error",)}
    assert {"create again", "identify empty", "enroll invalid", "bad k", "huge k", "get deleted", "update bad",
            "embed empty bytes", "embed two channels",
            "update unknown", "cancel without a migration", "cancel unknown"} <= errors
    assert not {"update", "cohort from the gallery", "enroll same pil"} & errors
    assert dict(remote)["enroll another image"][1] == "AlreadyExists"
    assert "names another image" in dict(remote)["enroll other pixels"].failed[0].reason
    assert "identify one" not in errors and "bulk" not in errors
