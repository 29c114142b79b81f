"""Bad input corpus: generated malformed inputs, each answered with its documented status code.

TWINSEARCH_BAD_INPUTS (default 1100, at least 1000) inputs, cycling through every kind below, are sent
over the wire (raw protobuf messages, so nothing is checked client-side first) to a `twinsearch serve`
subprocess with a 4 MiB message limit. Each kind names the status the API contract
(proto/twinsearch/v1/twinsearch.proto) documents for it (besides the issue's list: malformed page tokens, thresholds out of range, too many
items in one request, mean_k out of range, bad gallery names); odd but valid images (1 x 1, 16-bit, CMYK,
palette with alpha, animated GIF) and k = 0 ("0 = 5") must succeed. Meanwhile:

- the server stays up (health and Info answer every 100 inputs and at the end);
- its memory stays bounded: peak resident memory (VmHWM) at the end within 200 MiB of the peak
  after the first 150 inputs, so no input (a 30,000 x 30,000 header) got decoded;
- the stored data is unchanged: a gallery's counts, classes, identify and search answers are the
  same after the corpus as before, and no gallery was created.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from twinsearch.client import convert as c
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .conftest import DIM, env_int, glyph_png, unit_vectors

COUNT = max(1000, env_int("TWINSEARCH_BAD_INPUTS", 1100))
GALLERY = "stable"
TIMEOUT = 30.0
MESSAGE_MB = 4

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


# ------------------------------------------------------------------------------------ image makers


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_image(rng: np.random.Generator, mode: str = "L", size: int | None = None) -> Image.Image:
    side = int(size or rng.integers(8, 64))
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (side, side, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, payload) of each chunk of a PNG file."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((pos, kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def truncated_png(rng) -> bytes:
    data = encode(noise_image(rng), "PNG")  # noise: the compressed stream holds every pixel's worth
    _, idat_off, idat = next((o, o + 8, p) for o, k, p in png_chunks(data) if k == b"IDAT")
    return data[:int(rng.integers(1, idat_off + len(idat) // 2))]


def corrupt_png(rng) -> bytes:
    data = encode(noise_image(rng), "PNG")
    chunks = png_chunks(data)
    if rng.random() < 0.5:  # IDAT payload replaced by random bytes, checksum made valid: zlib fails
        out = data[:8]
        for _, kind, payload in chunks:
            out += chunk(kind, rng.bytes(len(payload)) if kind == b"IDAT" else payload)
        return out
    broken = bytearray(data)  # a header byte changed, its checksum left: a broken IHDR
    broken[16 + int(rng.integers(0, 8))] ^= 0xFF
    return bytes(broken)


def truncated_jpeg(rng) -> bytes:
    data = encode(noise_image(rng, "RGB"), "JPEG", quality=90)
    return data[:int(rng.integers(2, len(data) // 2))]


def corrupt_jpeg(rng) -> bytes:
    tail = rng.bytes(int(rng.integers(10, 500)))
    return b"\xff\xd8" + (b"\x00" if tail[:1] == b"\xff" else b"") + tail


def huge_png(rng) -> bytes:
    """A valid PNG header declaring 30,000 x 30,000 pixels over a few bytes of data (a decompression bomb)."""
    w = h = 30_000
    ihdr = struct.pack(">IIBBBBB", w, h, 8, int(rng.choice([0, 2])), 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def huge_jpeg(rng) -> bytes:
    data = bytearray(encode(noise_image(rng, "L", 16), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 30_000, 30_000)
    return bytes(data)


def huge_gif(rng) -> bytes:
    data = bytearray(encode(noise_image(rng, "L", 16), "GIF"))
    data[6:10] = struct.pack("<HH", 30_000, 30_000)  # the logical screen
    return bytes(data)


def one_pixel(rng) -> bytes:
    mode = str(rng.choice(["L", "RGB", "RGBA"]))
    fmt = str(rng.choice(["PNG", "GIF", "BMP"] + (["JPEG"] if mode != "RGBA" else [])))
    return encode(noise_image(rng, mode, 1), fmt)


def sixteen_bit(rng) -> bytes:
    arr = rng.integers(0, 65536, (int(rng.integers(4, 40)),) * 2).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def cmyk_jpeg(rng) -> bytes:
    return encode(noise_image(rng, "RGB").convert("CMYK"), "JPEG")


def palette_alpha(rng) -> bytes:
    img = noise_image(rng, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=int(rng.integers(0, 16)))


def animated_gif(rng) -> bytes:
    frames = [noise_image(rng, "L", 24) for _ in range(int(rng.integers(2, 6)))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def bad_raw(rng) -> pb.RawImage:
    h, w = (int(x) for x in rng.integers(1, 40, 2))
    variant = int(rng.integers(0, 7))
    if variant == 0:  # unsupported dtype
        dtype = str(rng.choice(["int64", "float64", "int8", "bool", "uint32", "", "u8"]))
        return pb.RawImage(dtype=dtype, shape=[h, w], data=rng.bytes(h * w * 8))
    if variant == 1:  # channels not in {1, 3, 4}
        ch = int(rng.choice([0, 2, 5, 7]))
        return pb.RawImage(dtype="uint8", shape=[h, w, ch], data=rng.bytes(h * w * ch))
    if variant == 2:  # rank not 2 or 3
        shape = [int(x) for x in rng.integers(1, 6, size=int(rng.choice([0, 1, 4, 5])))]
        return pb.RawImage(dtype="uint8", shape=shape, data=rng.bytes(int(np.prod(shape))))
    if variant == 3:  # byte count disagrees with the shape
        size = h * w + int(rng.choice([-1, 1, 7, -h * w]))
        return pb.RawImage(dtype="uint8", shape=[h, w], data=rng.bytes(max(size, 0)))
    if variant == 4:  # a zero dimension
        return pb.RawImage(dtype="uint8", shape=[0, w], data=b"")
    if variant == 5:  # float32 outside [0, 1]
        arr = rng.uniform(1.5, 300, (h, w)).astype("<f4")
        return pb.RawImage(dtype="float32", shape=[h, w], data=arr.tobytes())
    arr = np.full((h, w), np.nan, dtype="<f4")  # float32 NaN pixels
    return pb.RawImage(dtype="float32", shape=[h, w], data=arr.tobytes())


def bad_vector(rng) -> pb.Vector:
    variant = int(rng.integers(0, 6))
    v = unit_vectors(1, int(rng.integers(1 << 30)))[0].astype("<f4")
    if variant == 0:
        v[int(rng.integers(DIM))] = np.nan
    elif variant == 1:
        v[:] = np.nan
    elif variant == 2:
        v[int(rng.integers(DIM))] = float(rng.choice([np.inf, -np.inf]))
    elif variant == 3:  # another dimension, consistent bytes
        d = int(rng.choice([1, 8, 15, 17, 128, 512]))
        return pb.Vector(data=unit_vectors(1, 3, d)[0].astype("<f4").tobytes(), dim=d)
    elif variant == 4:  # dim field and bytes disagree
        return pb.Vector(data=v.tobytes()[:int(rng.integers(0, 4 * DIM - 1))], dim=DIM)
    else:  # not unit length
        v *= float(rng.choice([0.0, 0.5, 3.0, 1e6]))
    return pb.Vector(data=v.tobytes(), dim=DIM)


# ------------------------------------------------------------------------------------ routing


def good_input(i: int = 0) -> pb.Input:
    return pb.Input(image=pb.Image(encoded=glyph_png(i)))


def image_cases(kind: str, image: pb.Image, code, rng) -> Iterator[tuple]:
    """An image sent through one of the RPCs that take images; Enroll only for images that must fail
    (all or nothing: its good first item must not be stored either)."""
    inp = pb.Input(image=image)
    routes = ["Embed", "Verify", "Identify"] + (["Enroll"] if code != OK else [])
    route = routes[int(rng.integers(len(routes)))]
    if route == "Embed":
        yield kind, "Embed", pb.EmbedRequest(images=[good_input().image, image]), code
    elif route == "Verify":
        yield kind, "Verify", pb.VerifyRequest(pairs=[pb.Pair(a=good_input(), b=inp)]), code
    elif route == "Identify":
        yield kind, "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[inp]), code
    else:
        items = [pb.EnrollItem(label="new", input=good_input(1)), pb.EnrollItem(label="new", input=inp)]
        yield kind, "Enroll", pb.EnrollRequest(gallery=GALLERY, items=items), code


def vector_cases(kind: str, vector: pb.Vector, rng) -> Iterator[tuple]:
    inp = pb.Input(vector=vector)
    route = int(rng.integers(3))
    if route == 0:
        yield kind, "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[inp]), INVALID
    elif route == 1:
        yield kind, "Verify", pb.VerifyRequest(pairs=[pb.Pair(a=inp, b=good_input())]), INVALID
    else:
        items = [pb.EnrollItem(label="new", input=good_input(2)), pb.EnrollItem(label="new", input=inp)]
        yield kind, "Enroll", pb.EnrollRequest(gallery=GALLERY, items=items), INVALID


def label_cases(rng) -> Iterator[tuple]:
    label = str(rng.choice(["", "x" * 10_000, "y" * 257, "é" * 5000]))
    route = int(rng.integers(3))
    if route == 0:
        items = [pb.EnrollItem(label="fine", input=good_input()), pb.EnrollItem(label=label, input=good_input())]
        yield "label", "Enroll", pb.EnrollRequest(gallery=GALLERY, items=items), INVALID
    elif route == 1:
        yield "label", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[good_input()], labels=[label]), INVALID
    else:
        q = pb.ClassQuery(probe=good_input(), label=label)
        yield "label", "VerifyClass", pb.VerifyClassRequest(gallery=GALLERY, queries=[q]), INVALID


def gallery_cases(rng) -> Iterator[tuple]:
    name = "nope-" + "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789._-"), size=int(rng.integers(1, 60))))
    route = int(rng.integers(7))
    requests = [
        ("Identify", pb.IdentifyRequest(gallery=name, probes=[good_input()])),
        ("Search", pb.SearchRequest(gallery=name, probes=[good_input()])),
        ("Enroll", pb.EnrollRequest(gallery=name, items=[pb.EnrollItem(label="a", input=good_input())])),
        ("ListClasses", pb.ListClassesRequest(gallery=name)),
        ("GetGallery", pb.GetGalleryRequest(name=name)),
        ("DeleteGallery", pb.DeleteGalleryRequest(name=name)),
        ("VerifyClass", pb.VerifyClassRequest(gallery=name, queries=[pb.ClassQuery(probe=good_input(), label="a")])),
    ]
    method, request = requests[route]
    yield "unknown gallery", method, request, NOT_FOUND


def k_cases(rng) -> Iterator[tuple]:
    # -1: the field is int32 now; an old client's uint32 2**32 - 1 arrives as -1 (test_error_details.py)
    k = int(rng.choice([0, 10**9, 1001, -1]))
    code = OK if k == 0 else INVALID  # "0 = 5" (Identify), "0 = 10" (Search); the server's max k is 1000
    if rng.random() < 0.5:
        yield "k", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[good_input()], k=k), code
    else:
        yield "k", "Search", pb.SearchRequest(gallery=GALLERY, probes=[good_input()], k=k), code


def oversized_cases(rng) -> Iterator[tuple]:
    blob = rng.bytes(MESSAGE_MB * 1024 * 1024 + int(rng.integers(1, 100_000)))
    route = int(rng.integers(2))
    if route == 0:
        yield "over the size limit", "Embed", pb.EmbedRequest(images=[pb.Image(encoded=blob)]), EXHAUSTED
    else:
        items = [pb.EnrollItem(label="big", input=pb.Input(image=pb.Image(encoded=blob)))]
        yield "over the size limit", "Enroll", pb.EnrollRequest(gallery=GALLERY, items=items), EXHAUSTED


def page_token_cases(rng) -> Iterator[tuple]:
    # Tokens made only of characters outside base64url ("!!!") are accepted: test_page_token_of_foreign_characters.
    token = str(rng.choice(["not base64 at all", "YQ", "_w==", "\u00e9t\u00e9", "a" * 4001 + "*"]))
    yield "page token", "ListClasses", pb.ListClassesRequest(gallery=GALLERY, page_token=token), INVALID


def threshold_cases(rng) -> Iterator[tuple]:
    if rng.random() < 0.5:
        options = pb.ThresholdOptions(threshold=float(rng.choice([-0.5, 2.0001, 7.0, np.nan, np.inf, -np.inf])))
    else:
        options = pb.ThresholdOptions(target_far=float(rng.choice([0.0, -0.1, 1.5, np.nan, np.inf])))
    if rng.random() < 0.5:
        yield "threshold", "Verify", pb.VerifyRequest(pairs=[pb.Pair(a=good_input(), b=good_input(1))],
                                                     threshold=options), INVALID
    else:
        yield "threshold", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[good_input()],
                                                         threshold=options), INVALID


def too_many_cases(rng) -> Iterator[tuple]:
    n = 1025 + int(rng.integers(0, 200))  # the server's default: at most 1,024 items per request
    inp = pb.Input(vector=c.vector_to_pb(unit_vectors(1, 4)[0]))
    if rng.random() < 0.5:
        yield "too many items", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[inp] * n), EXHAUSTED
    else:
        yield "too many items", "Verify", pb.VerifyRequest(pairs=[pb.Pair(a=inp, b=inp)] * n), EXHAUSTED


def mean_k_cases(rng) -> Iterator[tuple]:
    mean_k = int(rng.choice([1001, 10**9, -1]))
    yield "mean_k", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[good_input()], scoring=pb.SCORING_MEAN_OF_K,
                                                   mean_k=mean_k), INVALID


def gallery_name_cases(rng) -> Iterator[tuple]:
    name = str(rng.choice(["", "a/b", "../etc", "with space", "x" * 129, "caf\u00e9", "tab\there", "semi;colon"]))
    yield "gallery name", "CreateGallery", pb.CreateGalleryRequest(name=name), INVALID


def empty_cases(rng) -> Iterator[tuple]:
    variant = int(rng.integers(4))
    image = [pb.Image(encoded=b""), pb.Image(), pb.Image(raw=pb.RawImage()),
             pb.Image(raw=pb.RawImage(dtype="uint8", shape=[], data=b""))][variant]
    if variant == 1 and rng.random() < 0.5:  # an Input with neither image nor vector
        yield "empty", "Identify", pb.IdentifyRequest(gallery=GALLERY, probes=[pb.Input()]), INVALID
        return
    yield from image_cases("empty", image, INVALID, rng)


KINDS: list[tuple[str, Callable]] = [
    ("truncated PNG", lambda rng: image_cases("truncated PNG", pb.Image(encoded=truncated_png(rng)), INVALID, rng)),
    ("corrupt PNG", lambda rng: image_cases("corrupt PNG", pb.Image(encoded=corrupt_png(rng)), INVALID, rng)),
    ("truncated JPEG", lambda rng: image_cases("truncated JPEG", pb.Image(encoded=truncated_jpeg(rng)), INVALID, rng)),
    ("corrupt JPEG", lambda rng: image_cases("corrupt JPEG", pb.Image(encoded=corrupt_jpeg(rng)), INVALID, rng)),
    ("random bytes", lambda rng: image_cases("random bytes", pb.Image(encoded=rng.bytes(int(rng.integers(1, 3000)))),
                                             INVALID, rng)),
    ("empty", empty_cases),
    ("1x1 image", lambda rng: image_cases("1x1 image", pb.Image(encoded=one_pixel(rng)), OK, rng)),
    ("30000x30000 PNG", lambda rng: image_cases("30000x30000 PNG", pb.Image(encoded=huge_png(rng)), EXHAUSTED, rng)),
    ("30000x30000 JPEG", lambda rng: image_cases("30000x30000 JPEG", pb.Image(encoded=huge_jpeg(rng)), EXHAUSTED,
                                                 rng)),
    ("30000x30000 GIF", lambda rng: image_cases("30000x30000 GIF", pb.Image(encoded=huge_gif(rng)), EXHAUSTED, rng)),
    ("16-bit PNG", lambda rng: image_cases("16-bit PNG", pb.Image(encoded=sixteen_bit(rng)), OK, rng)),
    ("CMYK JPEG", lambda rng: image_cases("CMYK JPEG", pb.Image(encoded=cmyk_jpeg(rng)), OK, rng)),
    ("palette with alpha", lambda rng: image_cases("palette with alpha", pb.Image(encoded=palette_alpha(rng)), OK,
                                                   rng)),
    ("animated GIF", lambda rng: image_cases("animated GIF", pb.Image(encoded=animated_gif(rng)), OK, rng)),
    ("raw array", lambda rng: image_cases("raw array", pb.Image(raw=bad_raw(rng)), INVALID, rng)),
    ("vector", lambda rng: vector_cases("vector", bad_vector(rng), rng)),
    ("label", label_cases),
    ("unknown gallery", gallery_cases),
    ("k", k_cases),
    ("page token", page_token_cases),
    ("threshold", threshold_cases),
    ("too many items", too_many_cases),
    ("mean_k", mean_k_cases),
    ("gallery name", gallery_name_cases),
    ("over the size limit", oversized_cases),
]


def corpus(count: int, seed: int = 0) -> Iterator[tuple]:
    """`count` cases (kind, method, request, expected code), cycling through KINDS; the size-limit kind
    (4 MiB each) comes up a tenth as often as the others."""
    rng = np.random.default_rng(seed)
    made = 0
    turn = 0
    while made < count:
        name, make = KINDS[turn % len(KINDS)]
        turn += 1
        if name == "over the size limit" and (turn // len(KINDS)) % 10:
            continue
        for case in make(rng):
            yield case
            made += 1


# ------------------------------------------------------------------------------------ the test


def snapshot_of(stub) -> dict:
    probes = [pb.Input(vector=c.vector_to_pb(v)) for v in unit_vectors(5, seed=77)] + [good_input(3)]
    gallery = stub.GetGallery(pb.GetGalleryRequest(name=GALLERY), timeout=TIMEOUT)
    return {
        "galleries": sorted(g.name for g in stub.ListGalleries(pb.ListGalleriesRequest(), timeout=TIMEOUT).galleries),
        "counts": (gallery.item_count, gallery.class_count),
        "classes": stub.ListClasses(pb.ListClassesRequest(gallery=GALLERY, page_size=1000),
                                    timeout=TIMEOUT).SerializeToString(deterministic=True),
        "identify": stub.Identify(pb.IdentifyRequest(gallery=GALLERY, probes=probes, k=5),
                                  timeout=TIMEOUT).SerializeToString(deterministic=True),
        "search": stub.Search(pb.SearchRequest(gallery=GALLERY, probes=probes, k=10),
                              timeout=TIMEOUT).SerializeToString(deterministic=True),
    }


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@pytest.mark.slow
def test_bad_input_corpus(serve):
    server = serve("data", "--max-message-mb", str(MESSAGE_MB))
    big = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = twinsearch_pb2_grpc.TwinSearchStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        stub.CreateGallery(pb.CreateGalleryRequest(name=GALLERY), timeout=TIMEOUT)
        vectors = unit_vectors(30, seed=1)
        items = [pb.EnrollItem(label=f"class-{i % 7}", input=pb.Input(vector=c.vector_to_pb(v)), client_id=f"v{i}")
                 for i, v in enumerate(vectors)]
        items += [pb.EnrollItem(label=f"glyph-{i % 3}", input=good_input(i), client_id=f"g{i}") for i in range(10)]
        stub.Enroll(pb.EnrollRequest(gallery=GALLERY, items=items), timeout=TIMEOUT)
        before = snapshot_of(stub)

        tried: Counter = Counter()
        wrong: list[str] = []
        warm_peak = None
        for n, (kind, method, request, expected) in enumerate(corpus(COUNT)):
            try:
                getattr(stub, method)(request, timeout=TIMEOUT)
                code, details = OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            tried[kind] += 1
            if code != expected:
                shown = f"k={request.k} " if kind == "k" else ""
                wrong.append(f"{kind} {shown}via {method}: {code.name} ({details[:150]!r}), documented {expected.name}")
            if n == 150:
                warm_peak = peak_mb(server.pid)
            if n % 100 == 99:
                assert server.alive(), "the server died"
                assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).api_version == "v1"
        served = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status
        assert served == health_pb2.HealthCheckResponse.SERVING
        end_peak = peak_mb(server.pid)
        after = snapshot_of(stub)

    total = sum(tried.values())
    print(f"\nbad inputs: {total} tried, {len(wrong)} with another status than documented; "
          f"peak RSS {warm_peak:.0f} MiB after 150, {end_peak:.0f} MiB at the end; by kind: {dict(tried)}")
    assert total >= 1000 and len(tried) == len(KINDS)
    assert not wrong, f"{len(wrong)} inputs got another status than documented:\n" + "\n".join(wrong[:40])
    assert end_peak - warm_peak < 200, f"peak memory grew from {warm_peak:.0f} to {end_peak:.0f} MiB"
    assert after == before, "stored data changed"


def test_page_token_of_foreign_characters(tmp_path, model_file):
    """A page token of characters outside base64url is malformed: INVALID_ARGUMENT, as the proto documents."""
    from twinsearch.client import InvalidArgument, LocalClient

    with LocalClient(tmp_path / "data", model=model_file) as client:
        client.create_gallery(GALLERY)
        client.enroll(GALLERY, "a", unit_vectors(1, 0)[0])
        for token in ("!!!", "%%%%", "===", "@@@@"):
            with pytest.raises(InvalidArgument):
                client.class_page(GALLERY, page_token=token)
