"""Errors about one input name it as the caller knows it (the path), and identify can report a bad
probe in its place instead of failing the call: both clients, the same answers."""

import numpy as np
import pytest
from PIL import Image

from twinsearch.client import Identification, InvalidArgument, ProbeFailure


@pytest.fixture(params=["remote", "local"])
def any_client(request):
    return request.getfixturevalue("client" if request.param == "remote" else "local_client")


@pytest.fixture
def files(tmp_path, png):
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    for i, path in enumerate(good):
        path.write_bytes(png(i))
    bad = tmp_path / "scans" / "bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    return good, bad


def _gallery(c, good):
    c.create_gallery("g")
    c.enroll("g", ["a", "b", "c"], good)


def test_errors_name_the_file(any_client, files):
    c = any_client
    good, bad = files
    _gallery(c, good)
    named = rf"probes\[1\] \({bad}\): "
    with pytest.raises(InvalidArgument, match=named):
        c.identify("g", [good[0], bad])
    with pytest.raises(InvalidArgument, match=rf"probes\[1\] \({bad}\): "):
        c.identify("g", [str(good[0]), str(bad)])
    with pytest.raises(InvalidArgument, match=named):
        c.search("g", [good[0], bad])
    with pytest.raises(InvalidArgument, match=rf"queries\[1\]\.probe \({bad}\): "):
        c.verify_class("g", [good[0], bad], "a")
    with pytest.raises(InvalidArgument, match=rf"pairs\[0\]\.b \({bad}\): "):
        c.verify(good[0], bad)
    with pytest.raises(InvalidArgument, match=rf"images\[1\] \({bad}\): "):
        c.embed([good[0], bad])
    with pytest.raises(InvalidArgument, match=rf"items\[1\] \({bad}\): "):
        c.enroll("g", "d", [good[0], bad])
    result = c.enroll("g", "d", [good[0], bad], skip_invalid=True)
    assert result.failed[0].index == 1 and result.failed[0].reason.startswith(f"items[1] ({bad}): ")
    with pytest.raises(InvalidArgument) as info:  # bytes have no name: the position only
        c.identify("g", [good[0], bad.read_bytes()])
    assert info.value.details.startswith("probes[1]: cannot identify the image format")
    with pytest.raises(InvalidArgument) as info:  # a vector has no name either
        c.identify("g", [Image.open(good[1]), np.ones(3, np.float32)])
    assert info.value.details.startswith("probes[1]: vector has dimension 3")


def test_identify_can_report_each_bad_probe_in_its_place(any_client, files, dim):
    c = any_client
    good, bad = files
    _gallery(c, good)
    missing = bad.parent / "missing.png"
    probes = [good[0], bad, good[1], missing, np.ones(dim + 1, np.float32), good[2]]
    answers = c.identify("g", probes, k=2, skip_invalid=True)
    assert [type(a) for a in answers] == [Identification, ProbeFailure, Identification, ProbeFailure,
                                          ProbeFailure, Identification]
    assert [a.label for a in answers if isinstance(a, Identification)] == ["a", "b", "c"]
    assert [x.label for x in answers[0].candidates] == [x.label for x in c.identify("g", good[0], k=2).candidates]
    failures = [a for a in answers if isinstance(a, ProbeFailure)]
    assert [f.index for f in failures] == [1, 3, 4]
    assert failures[0].reason.startswith(f"probes[1] ({bad}): ")
    assert failures[1].reason.startswith("probes[3]: cannot read image file") and str(missing) in failures[1].reason
    assert failures[2].reason.startswith("probes[4]: ") and "dimension" in failures[2].reason
    one = c.identify("g", bad, skip_invalid=True)
    assert isinstance(one, ProbeFailure) and one.index == 0 and one.reason.startswith(f"probes[0] ({bad}): ")
    assert c.identify("g", [missing], skip_invalid=True)[0].index == 0  # nothing left to send
    with pytest.raises(InvalidArgument, match=r"probes\[3\]"):
        c.identify("g", probes)  # the default is unchanged: a bad probe fails the call (files are read first)


def test_identify_skip_invalid_answers_alike_in_both_clients(client, local_client, files, dim):
    good, bad = files
    answers = []
    for c in (client, local_client):
        _gallery(c, good)
        answers.append(c.identify("g", [good[0], bad, np.ones(dim, np.float32)], skip_invalid=True))
    assert answers[0] == answers[1]
