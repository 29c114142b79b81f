"""Odd but plausible command lines of the client-side commands, run in-process against one real server
(with a token, so that a missing one can be tried too): each outcome is one `error:` line with the right
exit status and a hint in command-line terms, or output that keeps what was asked."""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinsearch.client.cli import main
from twinsearch.client.commands._common import add_connection_arguments, table

from .conftest import running_server

TOKEN = "pr0be"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    with running_server(tmp_path_factory.mktemp("probing") / "data", tiny_model, token=TOKEN, grace=1.0) as running:
        yield running


@pytest.fixture
def run(server, capsys):
    """run(*argv, token=True) -> (exit status, stdout, stderr), against the module's server."""

    def _run(*argv: str, token: bool = True):
        extra = ["--address", server.address, "--timeout", "10"] + (["--token", TOKEN] if token else [])
        status = main([argv[0], *extra, *argv[1:]])  # so that argv may override them
        out = capsys.readouterr()
        return status, out.out, out.err

    return _run


@pytest.fixture(scope="module")
def files(tmp_path_factory, png):
    folder = tmp_path_factory.mktemp("files")
    good = []
    for i in range(3):
        good.append(folder / f"{i}.png")
        good[-1].write_bytes(png(100 + i))
    (folder / "junk.png").write_bytes(b"not an image")
    (folder / "dir").mkdir()
    return [str(p) for p in good], str(folder / "junk.png"), str(folder / "dir"), str(folder / "missing.png")


def test_enroll_skip_invalid_stores_the_readable_files_and_lists_the_others(run, files):
    good, junk, folder, missing = files
    assert run("galleries", "create", "skips")[0] == 0
    status, out, err = run("enroll", "skips", "a", good[0], missing, folder, junk, good[1], "--skip-invalid",
                           "--ids", "s0", "s1", "s2", "s3", "s4", "--json")
    result = json.loads(out)
    assert status == 1 and err == ""
    assert [x["client_id"] for x in result["stored"]] == ["s0", "s4"]
    assert [(f["index"], f["client_id"]) for f in result["failed"]] == [(1, "s1"), (2, "s2"), (3, "s3")]
    assert result["failed"][0]["reason"].startswith("items[1]: cannot read image file") and missing in out
    assert result["failed"][2]["reason"].startswith(f"items[3] ({junk}): ")
    status, out, err = run("enroll", "skips", "a", missing, good[2], "--skip-invalid", "--ids", "m0", "m1")
    assert status == 1 and "1 stored, 0 already stored, 1 failed" in out
    assert [line.split()[-2:] for line in out.splitlines()[2:4]] == [["m0", "failed"], ["m1", "stored"]]
    assert err.startswith("error: items[0]: cannot read image file") and len(err.splitlines()) == 1
    status, out, _ = run("enroll", "skips", "a", missing, "--skip-invalid", "--json")
    assert status == 1 and json.loads(out)["stored"] == [] and json.loads(out)["failed"][0]["index"] == 0
    status, _, err = run("enroll", "nowhere", "a", missing, "--skip-invalid")
    assert status == 1 and "NOT_FOUND" in err


def test_a_repeated_list_option_adds_up(run, files):
    good, *_ = files
    assert run("enroll", "rep", "a", good[0], "--create")[0] == 0
    assert run("enroll", "rep", "b", good[1])[0] == 0
    status, out, _ = run("enroll", "rep", "c", good[0], good[1], "--ids", "c0", "--ids", "c1", "--json")
    assert status == 0 and [x["client_id"] for x in json.loads(out)["stored"]] == ["c0", "c1"]
    status, out, _ = run("search", "rep", good[0], "-k", "10", "--labels", "a", "--labels", "b", "--json")
    assert status == 0 and sorted(n["label"] for n in json.loads(out)[0]["neighbors"]) == ["a", "b"]
    status, out, _ = run("identify", good[0], "-g", "rep", "--labels", "a", "--labels", "b", "--json")
    assert status == 0 and sorted(c["label"] for c in json.loads(out)[0]["candidates"]) == ["a", "b"]
    status, out, _ = run("delete", "rep", "--client-ids", "c0", "--client-ids", "c1", "--json")
    assert status == 0 and json.loads(out)["deleted"] == 2


def test_enroll_says_how_to_create_and_refuses_what_it_cannot_do(run, files):
    good, *_ = files
    status, _, err = run("enroll", "absent", "a", good[0])
    assert status == 1 and err == "error: NOT_FOUND: no gallery named 'absent': give --create to create it\n"
    assert run("galleries", "create", "bound")[0] == 0
    status, _, err = run("enroll", "bound", "a", good[0], "--model", "other")
    assert status == 2 and "bound to model tiny-test" in err and "--model" in err
    status, _, err = run("enroll", "bound", "a", good[0], good[1], "--ids", "x", "")
    assert status == 2 and err.startswith("error: --ids: id 2 is empty")
    status, out, _ = run("galleries", "classes", "bound", "--json")
    assert json.loads(out) == []  # nothing was stored by the refused calls


def test_delete_class_checks_what_exists_before_asking(run, files, monkeypatch):
    good, *_ = files
    assert run("enroll", "dc", "a", good[0], good[1], "--create")[0] == 0
    status, _, err = run("delete", "dc", "--class", "nobody")  # stdin is not a terminal here
    assert status == 1 and err == "error: NOT_FOUND: gallery 'dc' has no class 'nobody'\n"
    status, _, err = run("delete", "nowhere", "--class", "a")
    assert status == 1 and "NOT_FOUND" in err and "nowhere" in err
    status, _, err = run("delete", "dc", "--class", "a")
    assert status == 2 and "delete class 'a' and its 2 items from gallery 'dc'?" in err and "--yes" in err
    status, _, err = run("delete", "dc", "--class", "", "--yes")
    assert status == 2 and err == "error: --class is empty: give the label of the class to delete\n"


def test_failed_calls_hint_in_command_line_terms(run, server, monkeypatch):
    status, _, err = run("info", token=False)
    assert status == 1 and "UNAUTHENTICATED" in err and "--token" in err and len(err.splitlines()) == 1
    info = server.engine.info

    # A call slower than the deadline, whatever the machine's speed: over a connection the process already
    # holds, Info sometimes answered within a deadline of 1 us.
    def slow_info():
        time.sleep(0.5)
        return info()

    monkeypatch.setattr(server.engine, "info", slow_info)
    status, _, err = run("info", "--timeout", "0.05")
    assert status == 1 and "DEADLINE_EXCEEDED" in err and "longer --timeout" in err and "start one" not in err
    monkeypatch.undo()
    status, _, err = run("info", "--tls", "--timeout", "1")  # the server does not serve TLS
    assert status == 1 and "UNAVAILABLE" in err and "TLS" in err and "start one" not in err


def test_a_tls_mismatch_is_one_line_without_grpc_s_own_log(server):
    """In a process of its own: grpc reads GRPC_VERBOSITY when it is imported, long before these tests run."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server", "client"))
    argv = [sys.executable, "-m", "twinsearch.client.cli", "info", "--tls", "--address", server.address,
            "--timeout", "2"]  # the server does not serve TLS: the handshake fails at each retry
    grpc_line = re.compile(r"^[DIWEF]\d{4} ", re.MULTILINE)  # as "I0101 12:00:00.000 ... Handshake failed"
    err = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60).stderr
    assert err.startswith("error: UNAVAILABLE") and len(err.splitlines()) == 1, err
    env["GRPC_VERBOSITY"] = "INFO"  # asked for by the user: kept
    assert grpc_line.search(subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60).stderr)


@pytest.mark.parametrize("argv, words", [
    (["--address", ""], "--address is empty"),
    (["--address", "127.0.0.1:99999"], "--address 127.0.0.1:99999: port 99999 is not a TCP port"),
])
def test_an_address_that_cannot_be_one_is_one_line(argv, words, capsys):
    assert main(["info", *argv, "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words}") and len(err.splitlines()) == 1


def test_an_empty_address_variable_means_the_default(monkeypatch):
    monkeypatch.setenv("TWINSEARCH_ADDRESS", "")
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    assert parser.parse_args([]).address == "localhost:50051"


def test_a_timeout_grpc_cannot_carry_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--address", "127.0.0.1:1", "--timeout", "1e10"])
    assert exit_info.value.code == 2 and "at most" in capsys.readouterr().err


def test_a_ca_file_without_a_certificate_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    assert main(["info", "--address", "127.0.0.1:1", "--ca", str(empty), "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --ca {empty} holds no PEM certificate") and len(err.splitlines()) == 1


def test_info_names_the_default_point_as_its_table_and_threshold_do(run):
    status, out, _ = run("info")
    assert status == 0 and "calibrated thresholds (default: eer):" in out
    assert run("galleries", "create", "by-default", "--threshold", "eer")[0] == 0


def test_galleries_create_exist_ok_says_which_settings_it_kept(run):
    assert run("galleries", "create", "kept", "--scoring", "prototype")[0] == 0
    status, _, err = run("galleries", "create", "kept", "--exist-ok")
    assert status == 0 and err == ""  # nothing asked for that it lacks
    status, out, err = run("galleries", "create", "kept", "--exist-ok", "--scoring", "nearest", "--threshold", "0.5",
                           "--json")
    assert status == 0 and json.loads(out)["scoring"] == "prototype"
    assert err.startswith("note: gallery 'kept' exists already") and "scoring prototype, not nearest" in err
    assert "threshold none, not 0.5000" in err


def test_verify_help_does_not_speak_of_a_gallery(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "gallery" not in capsys.readouterr().out


def test_tables_align_wide_characters_and_numbers_beside_missing_ones():
    text = table([("名前", 1.5), ("ab", None)], ["class", "distance"])
    lines = text.splitlines()
    assert lines[2] == "名前     1.5000"   # two terminal columns a character; the number right-aligned
    assert lines[3] == "ab            -"   # a missing value in a column of numbers aligns with them


def test_info_gives_a_model_s_input_height_first_as_train_s_size_does():
    from types import SimpleNamespace

    from twinsearch.client.commands.info import _input

    assert _input(SimpleNamespace(height=96, width=192, channels=1)) == "96 x 192, 1 channel"
    assert _input(SimpleNamespace(height=64, width=64, channels=3)) == "64 x 64, 3 channels"


def test_index_refuses_other_images_at_stored_paths_and_says_how_to_store_them(run, tmp_path, png):
    trees = []
    for t in range(2):  # two folders laid out alike, other images
        root = tmp_path / f"batch{t}"
        (root / "alice").mkdir(parents=True)
        for i in range(2):
            (root / "alice" / f"{i}.png").write_bytes(png(40 + 10 * t + i))
        trees.append(root)
    status, out, err = run("index", str(trees[0]), "--gallery", "same-paths", "--create", "--no-progress")
    assert status == 0 and "note:" not in err
    status, out, err = run("index", str(trees[0]), "--gallery", "same-paths", "--no-progress")  # a re-run
    assert status == 0 and "note:" not in err and re.search(r"same-paths\s+2\s+2\s+0\s+2\s+0", out)
    status, out, err = run("index", str(trees[1]), "--gallery", "same-paths", "--no-progress")
    assert status == 1 and re.search(r"same-paths\s+2\s+2\s+0\s+0\s+2", out)
    assert "alice/0.png: client id 'alice/0.png' names another image in gallery 'same-paths'" in out
    assert "note: 2 files are other images at paths the gallery stores already" in err
    assert "another --id-prefix" in err and "twinsearch delete same-paths --client-ids" in err
    status, out, err = run("index", str(trees[1]), "--gallery", "same-paths", "--no-progress", "--id-prefix", "b1/")
    assert status == 0 and "note:" not in err and re.search(r"same-paths\s+2\s+2\s+2\s+0\s+0", out)
