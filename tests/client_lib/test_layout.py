"""Before indexing: the classes found with their counts, a class depth that looks wrong, class names
shared by several source folders; and several folders indexed in one run without their ids colliding."""

import json

import pytest

from twinsearch.client import InvalidArgument
from twinsearch.client.bulk import walk_folders
from twinsearch.client.cli import main
from twinsearch.client.layout import survey


def _files(folder, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(b"")  # names only: a survey opens nothing


@pytest.fixture
def omniglot_like(tmp_path):
    """Three alphabets of five characters, twenty drawings each: characters are the classes."""
    root = tmp_path / "images_background"
    for a in range(3):
        for c in range(5):
            _files(root / f"alphabet{a}" / f"character{c:02d}", 20)
    return root


def test_a_depth_that_gives_a_few_large_nested_classes_is_flagged(omniglot_like):
    shallow = survey([omniglot_like], class_depth=1)
    assert shallow.counts == {"alphabet0": 100, "alphabet1": 100, "alphabet2": 100}
    assert shallow.deeper_classes == 15 and shallow.suggested_depth == 2
    [warning] = shallow.warnings()
    assert "--class-depth 2 gives 15 classes instead of 3 (100 images per class here)" in warning
    assert shallow.summary(shown=2) == ("found 300 images in 3 classes (class depth 1): alphabet0 100, "
                                        "alphabet1 100, ... and 1 more")
    right = survey([omniglot_like], class_depth=2)
    assert len(right.counts) == 15 and right.suggested_depth is None and right.warnings() == []


def test_people_with_a_few_images_in_session_folders_are_not_flagged(tmp_path):
    root = tmp_path / "people"
    for p in range(4):
        for s in range(3):
            _files(root / f"person{p}" / f"session{s}", 3)
    assert survey([root]).suggested_depth is None        # 9 images per class: not "many"
    _files(root / "person0", 1)                          # and an image at the class folder itself
    assert survey([root]).deeper_classes is None


def test_class_names_shared_by_two_folders_are_reported(tmp_path):
    for source, people in (("photos", ("alice", "bob", "carol")), ("scans", ("alice", "bob", "dave"))):
        for person in people:
            _files(tmp_path / source / person, 2)
    (tmp_path / "scans" / "stray.png").write_bytes(b"")
    found = survey([tmp_path / "photos", tmp_path / "scans"])
    assert found.counts == {"alice": 4, "bob": 4, "carol": 2, "dave": 2} and found.outside == 1
    assert found.shared == {"alice": (str(tmp_path / "photos"), str(tmp_path / "scans")),
                            "bob": (str(tmp_path / "photos"), str(tmp_path / "scans"))}
    [warning] = found.warnings()
    assert warning.startswith("2 class names appear in more than one folder (alice in ")
    assert "separate galleries" in warning
    assert found.summary().endswith("; 1 outside any class folder")
    entries, outside = walk_folders([tmp_path / "photos", tmp_path / "scans"])
    assert {e.relative for e in entries} >= {"photos/alice/0.png", "scans/alice/0.png"}
    assert [f.path for f in outside] == ["scans/stray.png"]
    (tmp_path / "other" / "photos").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match="several folders named 'photos'"):
        survey([tmp_path / "photos", tmp_path / "other" / "photos"])


def test_index_prints_the_classes_and_warns_before_sending(server, tmp_path, png, capsys):
    for source, seed in (("photos", 0), ("scans", 10)):
        for n, person in enumerate(("alice", "bob")):
            (tmp_path / source / person).mkdir(parents=True)
            for i in range(2):
                (tmp_path / source / person / f"{i}.png").write_bytes(png(seed + 2 * n + i))
    folders = [str(tmp_path / "photos"), str(tmp_path / "scans")]
    status = main(["index", *folders, "--gallery", "g", "--create", "--no-progress", "--address", server.address])
    out, err = capsys.readouterr()
    assert status == 0
    assert out.startswith("found 8 images in 2 classes (class depth 1): alice 4, bob 4\n")
    assert err.startswith("warning: 2 class names appear in more than one folder (alice in ")
    status = main(["index", *folders, "--gallery", "g", "--json", "--address", server.address])
    out, err = capsys.readouterr()
    figures = json.loads(out)                            # the class list goes to stderr with --json
    assert status == 0 and (figures["found"], figures["stored"], figures["skipped"]) == (8, 0, 8)
    assert err.startswith("found 8 images in 2 classes")
    assert main(["galleries", "show", "g", "--json", "--address", server.address]) == 0
    assert json.loads(capsys.readouterr().out)["item_count"] == 8  # the two alice/0.png are two items
