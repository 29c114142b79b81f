"""`twinsearch serve` start-up: one line naming the model, the data folder and the galleries; one line
and exit status 2 for a port in use or a data folder that cannot be used; no faiss loader noise."""

from __future__ import annotations

import argparse
import os
import socket

import numpy as np
import pytest

from twinsearch.server import startup
from twinsearch.server.commands import serve
from twinsearch.server.engine import Engine
from twinsearch.server.startup import StartupError, check_address, data_folder

from .conftest import serve_and_stop


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def _serve_fails(capsys, *argv: str) -> str:
    assert serve.run(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Errno" not in err and "Traceback" not in err, err
    return err


def test_a_data_folder_that_is_a_file(tmp_path, model_path, capsys):
    file = tmp_path / "data"
    file.write_text("not a folder")
    err = _serve_fails(capsys, "--model", str(model_path), "--data-dir", str(file), "--address", "127.0.0.1:0")
    assert err == f"twinsearch serve: the data folder {file} is a file, not a folder: choose a folder " \
                  "(it is created if missing)\n"
    err = _serve_fails(capsys, "--model", str(model_path), "--data-dir", str(file / "sub"),
                       "--address", "127.0.0.1:0")
    assert f"cannot create the data folder {file / 'sub'}: {file} is a file" in err


def test_a_data_folder_that_is_not_writable(tmp_path, model_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: there the check is seen through os.access
        folder.chmod(0o500)
    else:
        monkeypatch.setattr(startup.os, "access", lambda path, mode: str(path) != str(folder))
    try:
        err = _serve_fails(capsys, "--model", str(model_path), "--data-dir", str(folder), "--address", "127.0.0.1:0")
    finally:
        folder.chmod(0o700)
    assert f"the data folder {folder} is not writable by user " in err and "chmod" in err


def test_a_port_in_use(tmp_path, model_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(StartupError, match="in use"):
            check_address(address)
        err = _serve_fails(capsys, "--model", str(model_path), "--data-dir", str(tmp_path / "d"), "--address", address)
    assert err == f"twinsearch serve: address {address} is in use (is another server running?): stop it, or " \
                  "choose another port with --address\n"
    assert not (tmp_path / "d").exists()  # refused before anything was opened


def test_data_folder_is_created_and_checks_pass(tmp_path):
    assert data_folder(tmp_path / "a" / "b").is_dir()
    check_address("127.0.0.1:0")


def test_the_start_up_line_names_model_folder_and_galleries(tmp_path, model_path):
    data = tmp_path / "data"
    with Engine.open(data, model_path) as engine:
        engine.create_gallery("staff")
        engine.create_gallery("empty")
        v = np.eye(16, dtype=np.float32)[:3]
        from twinsearch.server.engine import EnrollItem

        engine.enroll("staff", [EnrollItem(label=f"c{i}", payload=v[i]) for i in range(3)])
        fingerprint = engine.model.fingerprint
    lines, _, err, status = serve_and_stop(["-v", "serve", "--model", str(model_path), "--data-dir", str(data),
                                            "--address", "127.0.0.1:0", "--torch-threads", "1"], 2)
    assert lines[0].startswith("twinsearch serving on 127.0.0.1:")
    assert lines[1].strip() == (f"twinsearch model tiny-0 (fingerprint {fingerprint}), data folder {data.resolve()}, "
                                "2 galleries: empty (0 items), staff (3 items)")
    assert status == 0
    assert "INFO twinsearch.server" in err and "faiss.loader" not in err  # -v logs ours, not faiss's loader
