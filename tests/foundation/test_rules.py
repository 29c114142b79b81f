"""One place for every input rule: the proto's comments state the limits and defaults the server
applies (`twinsearch.server.limits`), and the code applies exactly those."""

import re
from pathlib import Path

import pytest

from twinsearch.client.errors import InvalidArgument
from twinsearch.client.types import EnrollItem
from twinsearch.server.limits import DEFAULTS, LIMITS
from twinsearch.server.queries import (
    check_enroll_item,
    parse_identify,
    parse_page,
    parse_search,
    parse_threshold,
)
from twinsearch.server.validation import check_gallery_name, check_label, check_threshold

PROTO = Path(__file__).resolve().parents[2] / "proto" / "twinsearch" / "v1" / "twinsearch.proto"


def comment(message: str, field: str) -> str:
    """The comment on the line of `field` in `message` of the proto (with its continuation lines above)."""
    text = PROTO.read_text()
    body = re.search(rf"^message {message} {{\n(.*?)^}}", text, re.S | re.M)
    assert body, f"no message {message}"
    lines = body.group(1).splitlines()
    for n, line in enumerate(lines):
        if re.search(rf"\b{field} = \d+;", line):
            above = []
            for prev in reversed(lines[:n]):
                if not prev.strip().startswith("//"):
                    break
                above.insert(0, prev.strip()[2:])
            return " ".join(above + [line.partition("//")[2]])
    raise AssertionError(f"no field {field} in {message}")


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_gallery_name_length_is_the_proto_s():
    m = re.search(r"(\d+)-(\d+) characters", comment("CreateGalleryRequest", "name"))
    assert m and (int(m[1]), int(m[2])) == (1, LIMITS.gallery_name_length)
    assert check_gallery_name("x" * LIMITS.gallery_name_length)
    with pytest.raises(InvalidArgument, match=f"1 to {LIMITS.gallery_name_length} "):
        check_gallery_name("x" * (LIMITS.gallery_name_length + 1))


def test_label_client_id_and_metadata_limits_are_the_proto_s():
    m = re.search(r"(\d+)-(\d+) characters", comment("EnrollItem", "label"))
    assert m and int(m[2]) == LIMITS.label_length
    check_label("x" * LIMITS.label_length)
    with pytest.raises(InvalidArgument):
        check_label("x" * (LIMITS.label_length + 1))
    m = re.search(r"at most ([\d,]+) characters", comment("EnrollItem", "client_id"))
    assert m and number(m[1]) == LIMITS.client_id_length
    m = re.search(r"at most ([\d,]+) bytes", comment("EnrollItem", "metadata"))
    assert m and number(m[1]) == LIMITS.metadata_bytes
    ok = EnrollItem(label="a", payload=b"", client_id="c" * LIMITS.client_id_length,
                    metadata={"k": "v" * (LIMITS.metadata_bytes - 1)})
    check_enroll_item(ok, 0, {}, LIMITS)
    with pytest.raises(InvalidArgument, match=r"items\[0\]: client id") as err:
        check_enroll_item(EnrollItem(label="a", payload=b"", client_id="c" * (LIMITS.client_id_length + 1)),
                          0, {}, LIMITS)
    assert err.value.field == "items[0].client_id"
    with pytest.raises(InvalidArgument, match=r"items\[0\]: metadata"):
        check_enroll_item(EnrollItem(label="a", payload=b"", metadata={"k": "v" * LIMITS.metadata_bytes}),
                          0, {}, LIMITS)


def test_page_size_default_and_limit_are_the_proto_s():
    m = re.search(r"0 = ([\d,]+); at most ([\d,]+)", comment("ListClassesRequest", "page_size"))
    assert m and (number(m[1]), number(m[2])) == (DEFAULTS.page_size, LIMITS.page_size)
    m = re.search(r"0 = every gallery; at most ([\d,]+)", comment("ListGalleriesRequest", "page_size"))
    assert m and number(m[1]) == LIMITS.page_size
    assert parse_page(0, "", LIMITS).size == DEFAULTS.page_size
    assert parse_page(0, "", LIMITS, default=None).size is None
    assert parse_page(LIMITS.page_size, "", LIMITS).size == LIMITS.page_size
    for bad in (LIMITS.page_size + 1, -1):
        with pytest.raises(InvalidArgument) as err:
            parse_page(bad, "", LIMITS)
        assert err.value.field == "page_size"


def test_k_and_mean_k_defaults_are_the_proto_s():
    m = re.search(r"0 = (\d+)", comment("IdentifyRequest", "k"))
    assert m and int(m[1]) == DEFAULTS.identify_k
    m = re.search(r"0 = (\d+)", comment("SearchRequest", "k"))
    assert m and int(m[1]) == DEFAULTS.search_k
    m = re.search(r"0 = (\d+)", comment("CreateGalleryRequest", "mean_k"))
    assert m and int(m[1]) == DEFAULTS.mean_k
    assert parse_identify(0, None, None, None, None, None, LIMITS).k == DEFAULTS.identify_k
    assert parse_search(0, None, LIMITS).k == DEFAULTS.search_k
    with pytest.raises(InvalidArgument, match=f"between 1 and {LIMITS.max_k}"):
        parse_search(LIMITS.max_k + 1, None, LIMITS)


def test_threshold_range_is_the_proto_s():
    m = re.search(r"threshold must be in \[0, (\d+)\] and\s+target_far in \(0, 1\]",
                  " ".join(PROTO.read_text().split("message ThresholdOptions")[0].splitlines()[-4:]).replace("// ", ""))
    assert m and float(m[1]) == LIMITS.max_distance
    assert check_threshold(LIMITS.max_distance) == LIMITS.max_distance
    with pytest.raises(InvalidArgument, match=r"\[0, 2\]"):
        parse_threshold(LIMITS.max_distance + 0.001, None)
    with pytest.raises(InvalidArgument, match=r"\(0, 1\]"):
        parse_threshold(None, 0.0)
    with pytest.raises(InvalidArgument, match="not both"):
        parse_threshold(0.5, 0.01)
