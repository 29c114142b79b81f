"""What an operator meets with odd but plausible inputs to `twinsearch serve` and `twinsearch embed`: one
line naming the thing and what to do, told before the model loads where it can be, never a traceback;
no Ray processes left by a Ctrl-C. None of these tests starts Ray."""

from __future__ import annotations

import argparse
import io
import re
import signal
import socket
import sqlite3
import zipfile
from pathlib import Path

import pytest

from twinsearch.client.errors import FailedPrecondition, InvalidArgument
from twinsearch.server import startup
from twinsearch.server.commands import serve
from twinsearch.server.startup import StartupError, data_folder
from twinsearch.server.store import DB_NAME, GalleryStore

from .conftest import glyph, png


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Errno" not in err, err
    return err


# ---------------------------------------------------------------------- serve: the data folder
@pytest.mark.parametrize("content", ["garbage", "foreign", "truncated"])
def test_a_store_file_that_is_not_a_store_is_one_line(tmp_path, model_path, capsys, content):
    data = tmp_path / "data"
    data.mkdir()
    db = data / DB_NAME
    if content == "garbage":
        db.write_bytes(b"not a database at all, just text " * 40)
    elif content == "foreign":  # another program's SQLite file: a table of our name, other columns
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE galleries (x TEXT)")
    else:
        with GalleryStore.open(data) as store:
            store.create_gallery("g", fingerprint="f" * 16, dim=4)
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    with pytest.raises(FailedPrecondition, match="cannot be read as a twinsearch gallery store"):
        GalleryStore.open(data)
    assert serve.run(parse_serve("--model", str(model_path), "--data-dir", str(data), "--address", "127.0.0.1:0")) == 1
    err = one_line(capsys)
    assert f"{db} cannot be read as a twinsearch gallery store" in err and "another data folder" in err
    with GalleryStore.open(tmp_path / "fine") as fine:  # the store's lock was let go: a later open is not refused
        assert fine.list_galleries() == []
    with pytest.raises(FailedPrecondition):
        GalleryStore.open(data)  # still refused, not "already open"


def test_a_data_folder_on_a_read_only_file_system_says_so(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    real = startup.os.statvfs

    class ReadOnly:
        def __init__(self, stat):
            self.stat = stat

        def __getattr__(self, name):
            return getattr(self.stat, name)

        @property
        def f_flag(self):
            return self.stat.f_flag | startup.os.ST_RDONLY

    monkeypatch.setattr(startup.os, "statvfs", lambda p: ReadOnly(real(p)) if str(p) == str(folder) else real(p))
    with pytest.raises(StartupError, match="is on a read-only file system") as caught:
        data_folder(folder)
    assert "chmod" not in str(caught.value)  # no chown or chmod makes a read-only mount writable


# ---------------------------------------------------------------------- serve: TLS and metrics
def test_tls_files_that_are_no_certificate_and_key_are_told_before_anything_loads(tmp_path, model_path, certificate,
                                                                                  other_certificate, capsys):
    cert, key = certificate
    (tmp_path / "empty.pem").write_bytes(b"")
    cases = [
        (cert, other_certificate[1], "is not the private key of --tls-cert"),
        (cert, tmp_path / "missing.pem", "cannot read --tls-key"),
        (cert, tmp_path / "empty.pem", "holds no PEM private key"),
        (key, cert, "--tls-cert"),  # the two swapped
    ]
    for tls_cert, tls_key, words in cases:
        data = tmp_path / "data"
        assert serve.run(parse_serve("--model", str(model_path), "--data-dir", str(data), "--address", "127.0.0.1:0",
                                     "--tls-cert", str(tls_cert), "--tls-key", str(tls_key))) == 2
        err = one_line(capsys)
        assert words in err and "--address" not in err, err  # not "cannot listen ...: check the --address"
        assert not data.exists()  # refused before the model and the store were opened
    startup.check_tls(cert, key)  # the pair that belongs together passes


def test_a_metrics_port_in_use_names_the_metrics_flag(tmp_path, model_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        assert serve.run(parse_serve("--model", str(model_path), "--data-dir", str(data), "--address", "127.0.0.1:0",
                                     "--metrics-port", str(port))) == 2
    err = one_line(capsys)
    assert f"address 127.0.0.1:{port} is in use" in err and "--metrics-port" in err
    assert not data.exists()
    with pytest.raises(StartupError, match="give --metrics-address"):
        startup.check_address("no-such-host.invalid:0", startup.METRICS_FLAGS)


def test_serve_logs_no_grpc_line_for_a_client_without_tls(tmp_path, model_path, certificate, monkeypatch):
    import grpc

    from twinsearch.client.server_process import ServerProcess

    cert, key = certificate
    for name in ("GRPC_VERBOSITY", "GRPC_TRACE"):  # the server's own choice, not the caller's
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "serve.log"
    with ServerProcess.start(tmp_path / "data", model_path, flags=["--tls-cert", str(cert), "--tls-key", str(key)],
                             log_path=log) as server:
        with grpc.insecure_channel(server.address) as channel:  # its handshakes fail until the deadline
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(channel).result(timeout=1.5)
    assert not re.search(r"^[DIWEF]\d{4} ", log.read_text(), re.MULTILINE), log.read_text()


# ---------------------------------------------------------------------- serve: --model NAME=PATH
def test_a_model_name_that_cannot_be_one_is_told_as_such(tmp_path, model_path, capsys):
    data = tmp_path / "data"
    for value, words in [(f"bad/name={model_path}", "'bad/name' before '=' cannot name a model (use 1-64 letters"),
                         ("chars=", "no path after '='")]:
        assert serve.run(parse_serve("--model", value, "--data-dir", str(data), "--address", "127.0.0.1:0")) == 2
        err = one_line(capsys)
        assert f"--model {value}: {words}" in err and "does not exist" not in err, err
        assert not data.exists()  # refused before the model and the store were opened
    real = tmp_path / "one=two" / "a b=c.tsm"  # a file whose path holds "=" is served as it was
    real.parent.mkdir()
    real.write_bytes(model_path.read_bytes())
    assert serve.settings_from(parse_serve("--model", str(real)), {}).model_path == real


# ---------------------------------------------------------------------- embed: sources, --out, model
@pytest.fixture
def source(tmp_path) -> Path:
    folder = tmp_path / "src"
    for c in range(2):
        (folder / f"c{c}").mkdir(parents=True)
        (folder / f"c{c}" / "0.png").write_bytes(png(glyph(c)))
    return folder


def test_embed_refuses_a_source_without_images(tmp_path, model_path):
    from twinsearch.server.cluster.pipeline import embed_to_parquet

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a").mkdir()
    (tmp_path / "notes" / "a" / "readme.txt").write_text("no images here")
    with zipfile.ZipFile(tmp_path / "texts.zip", "w") as zf:
        zf.writestr("a/readme.txt", "hello")
    (tmp_path / "header.csv").write_text("path,label\n")
    for source, words in [("empty", "holds no image files"), ("notes", "holds no image files"),
                          ("texts.zip", "holds no image files"), ("header.csv", "holds no rows")]:
        out = tmp_path / f"out-{source}"
        with pytest.raises(InvalidArgument, match=words):
            embed_to_parquet(tmp_path / source, out, model=model_path)
        assert not out.exists()


def test_embed_refuses_a_corrupt_model_file_before_ray_starts(tmp_path, model_path):
    from twinsearch.encoder.errors import ModelFileError
    from twinsearch.server.cluster.pipeline import ModelFile

    broken = tmp_path / "broken.tsm"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():  # the card as it was, the weights replaced
            dst.writestr(item, b"not torch weights" if item.filename == "weights.pt" else src.read(item))
    with pytest.raises(ModelFileError, match="weights"):
        ModelFile.load(broken)
    assert ModelFile.load(model_path).fingerprint


def test_embed_says_in_one_line_that_out_cannot_be_written(tmp_path, model_path, source, capsys):
    pytest.importorskip("ray")
    from twinsearch.client.cli import _run

    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "vectors"  # under a file: cannot be created
    assert _run(["embed", str(source), "--out", str(out), "--model", str(model_path), "--no-progress"]) == 1
    err = one_line(capsys)
    assert f"cannot write in the --out folder '{out}'" in err


def test_embed_names_a_vector_file_in_out_that_cannot_be_read(tmp_path, model_path, source):
    pytest.importorskip("pyarrow")
    from twinsearch.server.cluster.pipeline import embed_to_parquet

    out = tmp_path / "vectors"
    out.mkdir()
    (out / "part-cut-00000.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(InvalidArgument, match="part-cut-00000.parquet' in --out cannot be read"):
        embed_to_parquet(source, out, model=model_path)


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")],
                         ids=["ctrl-c", "disk-full"])
def test_a_vector_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch, failure):
    pq = pytest.importorskip("pyarrow.parquet")
    from twinsearch.client.vector_files import VectorFileWriter

    others = tmp_path / ".part-0ther000-00000.parquet.tmp"  # another run's, maybe still being written
    others.write_bytes(b"PAR1")
    write_table = pq.write_table

    def cut_short(table, where, **kwargs):
        write_table(table, where, **kwargs)
        raise failure

    monkeypatch.setattr(pq, "write_table", cut_short)
    writer = VectorFileWriter(tmp_path, model="m", fingerprint="f", dim=2, rows_per_file=2)
    with pytest.raises(type(failure)):
        writer.add(["a", "b"], ["x", "x"], [{}, {}], [[1.0, 0.0], [0.0, 1.0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == [others.name]


def test_embed_turns_a_failed_ray_pipeline_into_one_line(tmp_path, model_path, source, capsys, monkeypatch):
    ray_exceptions = pytest.importorskip("ray.exceptions")
    import twinsearch.server.cluster.pipeline as pipeline
    from twinsearch.client.cli import _run

    def fails(*_args, **_kwargs):
        raise ray_exceptions.RayError("Traceback (most recent call last):\n  File ...\n"
                                      "twinsearch.encoder.errors.ModelFileError: cannot read the weights")

    monkeypatch.setattr(pipeline, "embed_to_parquet", fails)
    assert _run(["embed", str(source), "--out", str(tmp_path / "v"), "--model", str(model_path), "--no-progress"]) == 1
    err = one_line(capsys)
    assert err == ("twinsearch embed: the Ray pipeline failed: twinsearch.encoder.errors.ModelFileError: cannot "
                   "read the weights\n")


def test_manifests_as_spreadsheets_write_them(tmp_path):
    from twinsearch.server.cluster.sources import list_source

    image = tmp_path / "a.png"
    image.write_bytes(png(glyph(0)))
    bom = tmp_path / "bom.csv"  # "CSV UTF-8" of a spreadsheet: a byte-order mark first
    bom.write_bytes(b"\xef\xbb\xbfpath,label\na.png,x\n,y\n")
    listing = list_source(bom)
    assert [r.label for r in listing.rows] == ["x"]
    assert [(f.path, f.reason) for f in listing.failures] == [("row 3", "empty path")]  # not "row 3: row 3: ..."
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InvalidArgument, match="latin.csv' is not UTF-8 text"):
        list_source(latin)
    with pytest.raises(InvalidArgument, match="--path-column and --label-column"):
        list_source(bom, path_column="file")


# ---------------------------------------------------------------------- Ctrl-C while Ray starts
class FakeRay:
    """`ray` as `runtime.connect` uses it, with a Ctrl-C that arrives in the middle of `init`."""

    def __init__(self):
        self.events: list[str] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **_kwargs) -> None:
        self.events.append("starting")
        signal.raise_signal(signal.SIGINT)
        self.events.append("started")

    def shutdown(self) -> None:
        self.events.append("shutdown")


def test_ctrl_c_while_a_local_ray_instance_starts_stops_it_whole(monkeypatch):
    from twinsearch.server.cluster import runtime

    fake = FakeRay()
    monkeypatch.setattr(runtime, "require_ray", lambda *a, **k: fake)
    # Python's own handler, as in a terminal: a test run started in the background (CI) inherits an ignored
    # SIGINT, which the command keeps ignored.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            runtime.connect(runtime.RaySettings(None, 1, 100))
        assert fake.events == ["starting", "started", "shutdown"]  # not interrupted half-started, then stopped
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_ctrl_c_stays_ignored_while_ray_starts(monkeypatch):
    from twinsearch.server.cluster import runtime

    fake = FakeRay()
    monkeypatch.setattr(runtime, "require_ray", lambda *a, **k: fake)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job
    try:
        runtime.connect(runtime.RaySettings(None, 1, 100))
        assert fake.events == ["starting", "started"] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)

    # `twinsearch serve` handles SIGINT itself (a graceful stop): it gets the signal, Ray stays up for it.
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    try:
        fake = FakeRay()
        monkeypatch.setattr(runtime, "require_ray", lambda *a, **k: fake)
        assert runtime.connect(runtime.RaySettings(None, 1, 100)) is True
        assert seen == [signal.SIGINT] and fake.events == ["starting", "started"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_serve_help_states_what_an_unset_option_means():
    text = io.StringIO()
    parser = argparse.ArgumentParser(prog="twinsearch serve")
    serve.add_arguments(parser)
    parser.print_help(text)
    flat = " ".join(text.getvalue().split())
    for words in ("calls need no token", "plain TCP", "0: a free port, printed at start-up",
                  "no metrics endpoint", "Ray's own choice"):
        assert words in flat, words

