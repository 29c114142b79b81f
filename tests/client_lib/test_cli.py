"""The client-side commands of `twinsearch`, run in-process against a real server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from twinsearch.client.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(server, capsys):
    """run(*argv) -> (exit status, stdout, stderr), with --address pointing at the test server."""

    def _run(*argv: str, address: bool = True):
        extra = ["--address", server.address] if address else []
        status = main([*argv, *extra])
        out = capsys.readouterr()
        return status, out.out, out.err

    return _run


@pytest.fixture
def tree(tmp_path, png):
    root = tmp_path / "photos"
    for n, label in enumerate(("alice", "bob")):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(png(10 * n + i))
    (root / "bob" / "broken.png").write_bytes(b"junk")
    return root


def test_info(run):
    status, out, _ = run("info")
    assert status == 0 and "tiny-test" in out and "far_1" in out and "galleries   (none)" in out
    status, out, _ = run("info", "--json")
    assert status == 0 and json.loads(out)["model"]["dim"] == 16


def test_index_identify_verify_galleries(run, tree):
    status, out, _ = run("galleries", "create", "staff", "--scoring", "prototype")
    assert status == 0 and "staff" in out and "prototype" in out
    status, out, err = run("index", str(tree), "--gallery", "staff", "--batch-size", "2", "--no-progress")
    assert status == 1 and err == "error: 1 of 7 files not enrolled (--allow-partial accepts a partial run)\n"
    assert "bob/broken.png" in out and "1 files not enrolled" in out
    status, out, _ = run("index", str(tree), "--gallery", "staff", "--json", "--allow-partial")
    figures = json.loads(out)
    assert status == 0
    assert [figures[k] for k in ("found", "sent", "stored", "skipped", "failed")] == [7, 7, 0, 6, 1]
    assert figures["failures"][0]["path"] == "bob/broken.png"
    status, out, _ = run("index", str(tree), "--gallery", "staff", "--json")
    assert status == 1 and json.loads(out)["failed"] == 1

    status, out, _ = run("galleries")
    assert status == 0 and "staff" in out and "6" in out
    status, out, _ = run("galleries", "list", "--json")
    assert json.loads(out)[0]["item_count"] == 6
    status, out, _ = run("galleries", "classes", "staff")
    assert status == 0 and "alice" in out and "2 classes, 6 items" in out

    probe = str(tree / "alice" / "0.png")
    status, out, _ = run("identify", probe, str(tree / "bob" / "1.png"), "--gallery", "staff", "--k", "2")
    assert status == 0 and "alice/0.png" in out and "decision" in out
    status, out, _ = run("identify", probe, "--gallery", "staff", "--json", "--scoring", "nearest")
    [answer] = json.loads(out)
    assert answer["image"] == probe and answer["label"] == "alice" and answer["known"] is True
    assert answer["candidates"][0]["distance"] < 1e-6

    status, out, _ = run("verify", probe, probe)
    assert status == 0 and "same" in out
    status, out, _ = run("verify", probe, str(tree / "bob" / "0.png"), "--json", "--threshold", "0.0")
    assert json.loads(out)["threshold"]["source"] == "request"

    status, out, _ = run("galleries", "delete", "staff", "--yes")
    assert status == 0 and "6 items" in out


def test_index_creates_the_gallery_when_asked(run, tree):
    status, _, err = run("index", str(tree), "--gallery", "new", "--no-progress")
    assert status == 1 and "NOT_FOUND" in err and "give --create to create it" in err
    status, out, _ = run("index", str(tree), "--gallery", "new", "--create", "--json", "--allow-partial")
    assert status == 0 and json.loads(out)["stored"] == 6


def test_index_counts_every_file_once_and_exits_0_when_all_are_enrolled(run, tree, png):
    (tree / "stray.png").write_bytes(png(77))  # outside any class folder
    status, out, _ = run("index", str(tree), "--gallery", "counts", "--create", "--json")
    figures = json.loads(out)
    assert status == 1
    assert [figures[k] for k in ("found", "stored", "skipped", "failed")] == [8, 6, 0, 2]
    (tree / "stray.png").unlink()
    (tree / "bob" / "broken.png").unlink()
    status, out, _ = run("index", str(tree), "--gallery", "counts", "--json")
    figures = json.loads(out)
    assert status == 0 and [figures[k] for k in ("found", "stored", "skipped", "failed")] == [6, 0, 6, 0]


def test_errors_are_one_line_and_exit_1(run, tmp_path):
    status, out, err = run("identify", str(tmp_path / "missing.png"), "--gallery", "staff")
    assert status == 1 and err.startswith("error: INVALID_ARGUMENT") and "Traceback" not in err
    status, _, err = run("galleries", "show", "nowhere")
    assert status == 1 and "NOT_FOUND" in err
    status, _, err = main(["info", "--address", "127.0.0.1:1", "--timeout", "0.5"]), None, None
    assert status == 1


def test_address_and_token_from_the_environment(server, monkeypatch, capsys):
    monkeypatch.setenv("TWINSEARCH_ADDRESS", server.address)
    monkeypatch.setenv("TWINSEARCH_TOKEN", "")
    assert main(["galleries"]) == 0
    assert "no galleries" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["index", "enroll", "identify", "verify", "verify-class", "search", "delete",
                                     "info", "galleries", "demo"])
def test_help_explains_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"twinsearch {command}" in text and len(text) > 300
    if command != "demo":
        assert "--address" in text


def test_tls_and_token_options(tmp_path, tiny_model, certificate, capsys):
    """--tls/--ca and --token against a server that requires both (certificate made with openssl)."""
    from twinsearch.server.app import ServerSettings, start_server

    cert, key = certificate
    running = start_server(ServerSettings(data_dir=tmp_path / "d", model_path=tiny_model, address="127.0.0.1:0",
                                          token="s3cret", tls_cert=cert, tls_key=key))
    try:
        address = ["--address", running.address, "--timeout", "5"]
        assert main(["info", *address, "--ca", str(cert), "--token", "s3cret"]) == 0
        assert "tiny-test" in capsys.readouterr().out
        assert main(["info", *address, "--ca", str(cert)]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert main(["info", *address, "--token", "s3cret"]) == 1  # plaintext to a TLS port
        capsys.readouterr()
    finally:
        running.stop(grace=1.0)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_timeout_that_is_not_positive_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--address", "127.0.0.1:1", "--timeout", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and "Traceback" not in err


def test_an_unreadable_ca_file_is_one_line(tmp_path, capsys):
    status = main(["info", "--address", "127.0.0.1:1", "--ca", str(tmp_path / "missing.pem")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: cannot read --ca") and len(err.splitlines()) == 1


def _closed_pipe_run(argv: list[str], unbuffered: bool) -> subprocess.CompletedProcess:
    """Run `twinsearch ARGV` (this checkout's code) with stdout a pipe nobody reads any more, as in
    `twinsearch ... | head -1` once head has exited."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server", "client"))
    if unbuffered:  # each print writes at once, instead of at the flush before exit
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "twinsearch.client.cli", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_the_command_quietly(server):
    for argv, unbuffered in [(["info", "--json", "--address", server.address], False),
                             (["info", "--json", "--address", server.address], True),
                             (["--help"], False), (["info", "--help"], False)]:
        out = _closed_pipe_run(argv, unbuffered)
        assert out.returncode == 141, (argv, out.stderr)
        assert out.stderr == "", (argv, out.stderr)


class _Terminal:
    """A stdin that is a terminal on which the user types `answer`."""

    def __init__(self, answer: str):
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


def test_galleries_delete_asks_first(run, monkeypatch):
    assert run("galleries", "create", "kept")[0] == 0
    status, _, err = run("galleries", "delete", "kept")  # stdin is not a terminal here
    assert status == 2 and "pass --yes" in err and "Traceback" not in err
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    status, _, err = run("galleries", "delete", "kept")
    assert status == 1 and "delete gallery 'kept' and its 0 items? [y/N]" in err and "not deleted" in err
    assert run("galleries", "show", "kept")[0] == 0
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    status, out, _ = run("galleries", "delete", "kept")
    assert status == 0 and "deleted gallery 'kept'" in out
    assert run("galleries", "show", "kept")[0] == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(r"twinsearch \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_identify_names_the_bad_file_and_can_answer_the_others(run, tree):
    assert run("index", str(tree), "--gallery", "staff", "--create", "--allow-partial", "--no-progress")[0] == 0
    good, bad = str(tree / "alice" / "0.png"), str(tree / "bob" / "broken.png")
    status, _, err = run("identify", good, bad, "--gallery", "staff")
    assert status == 1 and err.startswith(f"error: INVALID_ARGUMENT: probes[1] ({bad}): ")
    status, out, err = run("identify", good, bad, "--gallery", "staff", "--skip-invalid")
    assert status == 1 and "alice/0.png" in out and "error" in out
    assert err.startswith(f"error: probes[1] ({bad}): ") and len(err.splitlines()) == 1
    status, out, _ = run("identify", good, bad, "--gallery", "staff", "--skip-invalid", "--json")
    answers = json.loads(out)
    assert status == 1 and answers[0]["label"] == "alice" and answers[1]["error"].startswith("probes[1]")


def test_enroll_search_verify_class_and_delete(run, tree, monkeypatch):
    alice = [str(tree / "alice" / f"{i}.png") for i in range(3)]
    bob = str(tree / "bob" / "0.png")
    status, _, err = run("enroll", "people", "alice", alice[0], "--ids", "a0")
    assert status == 1 and "NOT_FOUND" in err
    status, out, _ = run("enroll", "people", "alice", alice[0], alice[1], "--ids", "a0", "a1", "--create",
                         "--meta", "team=red")
    assert status == 0 and "2 stored, 0 already stored, 0 failed in gallery 'people' under 'alice'" in out
    status, out, _ = run("enroll", "people", "alice", alice[0], alice[1], "--ids", "a0", "a1")
    assert status == 0 and "0 stored, 2 already stored" in out and "already stored under" not in out
    status, out, _ = run("enroll", "people", "carol", alice[0], "--ids", "a0")  # a0 is alice's: it stays hers
    assert status == 0 and "already stored under alice (delete it first to change it)" in out
    status, _, err = run("enroll", "people", "alice", alice[2], "--ids", "a0")  # and names its own image
    assert status == 1 and "ALREADY_EXISTS" in err and "client id 'a0' names another image" in err
    status, _, err = run("enroll", "people", "bob", bob, str(tree / "bob" / "broken.png"))
    assert status == 1 and "broken.png" in err                     # all or nothing: bob not stored
    status, out, _ = run("enroll", "people", "bob", bob, str(tree / "bob" / "broken.png"), "--skip-invalid",
                         "--json")
    result = json.loads(out)
    assert status == 1 and len(result["stored"]) == 1 and "broken.png" in result["failed"][0]["reason"]
    status, _, err = run("enroll", "people", "bob", bob, "--ids", "x", "y")
    assert status == 2 and "2 --ids for 1 images" in err

    status, out, _ = run("search", "people", alice[0], "-k", "2")
    assert status == 0 and "a0" in out and "team=red" in out and "rank" in out
    status, out, _ = run("search", "people", alice[0], bob, "-k", "1", "--json")
    hits = json.loads(out)
    assert [h["neighbors"][0]["label"] for h in hits] == ["alice", "bob"]
    assert hits[0]["neighbors"][0]["client_id"] == "a0" and hits[0]["neighbors"][0]["distance"] == 0.0

    status, out, _ = run("verify-class", "people", "alice", alice[0], "--json")
    [answer] = json.loads(out)
    assert status == 0 and answer["same"] is True and answer["label"] == "alice"
    status, out, _ = run("verify-class", "people", "alice", alice[0], bob, "--threshold", "0.0")
    assert status == 0 and "same" in out and "different" in out and "request" in out
    status, _, err = run("verify-class", "people", "carol", alice[0])
    assert status == 1 and "NOT_FOUND" in err
    status, out, _ = run("verify-class", "people", "alice", alice[0], bob, "--cohort", "--threshold", "0.0")
    assert status == 0 and "cohort score" in out and "same" in out and "different" in out
    status, _, err = run("verify-class", "people", "alice", alice[0], "--cohort")
    assert status == 1 and "INVALID_ARGUMENT" in err and "threshold" in err
    assert run("galleries", "create", "signed", "--cohort-threshold", "0.5")[0] == 0  # a default for cohort calls
    assert run("enroll", "signed", "alice", alice[0])[0] == 0 and run("enroll", "signed", "bob", bob)[0] == 0
    status, out, _ = run("verify-class", "signed", "alice", alice[0], "--cohort", "--json")
    [answer] = json.loads(out)
    assert status == 0 and answer["threshold"]["distance"] == 0.5 and answer["threshold"]["source"] == "gallery"

    status, out, _ = run("delete", "people", "--client-ids", "a1", "nope")
    assert status == 0 and "deleted 1 items" in out
    status, _, err = run("delete", "people", "--class", "alice")  # stdin is not a terminal here
    assert status == 2 and "pass --yes" in err
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    status, out, _ = run("delete", "people", "--class", "alice")
    assert status == 0 and "deleted 1 items (class 'alice')" in out
    status, out, _ = run("delete", "people", "--ids", "999", "--json")
    assert status == 0 and json.loads(out)["deleted"] == 0
    status, out, _ = run("galleries", "classes", "people")
    assert "bob" in out and "alice" not in out


def test_galleries_create_takes_an_operating_point(run):
    status, out, _ = run("info", "--json")
    far_1 = next(p for p in json.loads(out)["model"]["thresholds"] if p["name"] == "far_1")
    status, out, _ = run("galleries", "create", "strict", "--threshold", "far_1", "--json")
    assert status == 0 and json.loads(out)["threshold"] == far_1["distance"]
    status, out, _ = run("galleries", "create", "eer", "--threshold", "eer")
    assert status == 0 and "operating point eer of the model is distance" in out and "keeps this distance" in out
    status, _, err = run("galleries", "create", "bad", "--threshold", "far_5")
    assert status == 2 and "no operating point 'far_5'" in err and "far_1" in err
    status, out, _ = run("galleries", "create", "plain", "--threshold", "0.5", "--json")
    assert status == 0 and json.loads(out)["threshold"] == 0.5
    status, out, _ = run("galleries", "create", "cohorted", "--cohort-threshold", "0.45", "--json")
    assert status == 0 and json.loads(out)["cohort_threshold"] == 0.45 and json.loads(out)["threshold"] is None
    status, out, _ = run("galleries", "show", "cohorted")
    assert status == 0 and "cohort threshold" in out and "0.45" in out
    status, _, err = run("galleries", "create", "bad", "--cohort-threshold", "-1")
    assert status == 1 and "INVALID_ARGUMENT" in err and "cohort threshold" in err
    status, out, _ = run("galleries", "set", "cohorted", "--threshold", "far_1", "--no-cohort-threshold", "--json")
    assert status == 0 and json.loads(out)["threshold"] == far_1["distance"] and json.loads(out)["cohort_threshold"] is None
    status, out, _ = run("galleries", "set", "cohorted", "--no-threshold", "--scoring", "prototype", "--json")
    assert status == 0 and json.loads(out)["threshold"] is None and json.loads(out)["scoring"] == "prototype"
    status, _, err = run("galleries", "set", "cohorted")
    assert status == 2 and "nothing to change" in err
    status, _, err = run("galleries", "set", "cohorted", "--threshold", "far_5")
    assert status == 2 and "no operating point 'far_5'" in err
    status, _, err = run("galleries", "set", "nope", "--threshold", "0.3")
    assert status == 1 and "NOT_FOUND" in err


def test_index_of_no_images_at_the_class_depth_creates_nothing(run, tree):
    status, _, err = run("index", str(tree), "--gallery", "deep", "--create", "--class-depth", "2", "--no-progress")
    assert status == 2 and "no images in class folders at class depth 2" in err
    assert "deep" not in run("galleries")[1]


def test_index_refuses_a_model_for_a_gallery_that_exists(run, tree):
    assert run("galleries", "create", "kept")[0] == 0
    status, _, err = run("index", str(tree), "--gallery", "kept", "--model", "another", "--no-progress")
    assert status == 2 and "cannot change it" in err


def test_tables_show_control_characters_in_labels_as_escapes(run, client, png):
    from twinsearch.client.commands._common import printable

    assert printable("plain label é 字") == "plain label é 字"
    assert printable("evil\x1b[2J\rRED\tx\ud800") == "evil\\x1b[2J\\rRED\\tx\\ud800"
    client.create_gallery("odd")
    client.enroll("odd", "evil\x1b[2J\x1b[31mRED\rSPOOF", [png(1)])
    status, out, _ = run("galleries", "classes", "odd")
    assert status == 0 and "\x1b" not in out and "\r" not in out and "evil\\x1b[2J\\x1b[31mRED\\rSPOOF" in out


def test_tables_say_where_a_threshold_comes_from(run, tree):
    assert run("index", str(tree), "--gallery", "said", "--create", "--allow-partial", "--no-progress")[0] == 0
    status, out, _ = run("identify", str(tree / "alice" / "0.png"), "--gallery", "said")
    header, _, row = out.strip().splitlines()[:3]
    assert status == 0 and "source" in header.split() and "model_eer" in row
    status, out, _ = run("identify", str(tree / "alice" / "0.png"), "--gallery", "said", "--threshold", "0.5")
    assert "request" in out.strip().splitlines()[2]
    assert "model's default" in run("galleries", "show", "said")[1]
