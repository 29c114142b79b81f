"""`twinsearch serve` refuses a port outside 0..65535 (gRPC would listen on the port modulo 65536) and a
negative grace period in one line, exit status 2, before anything loads."""

from __future__ import annotations

import argparse

import pytest

from twinsearch.server.commands import serve
from twinsearch.server.startup import check_address, split_address


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, env, words", [
    (("--address", "127.0.0.1:99999"), {}, "must be from 0 to 65535 (0: a free port), got 99999"),
    (("--address", "127.0.0.1:65536"), {}, "got 65536"),
    (("--address", "[::1]:-1"), {}, "got -1"),
    ((), {"TWINSEARCH_ADDRESS": "0.0.0.0:70000"}, "'0.0.0.0:70000' must be from 0 to 65535"),
    (("--metrics-port", "99999"), {}, "metrics_port must be from 0 to 65535"),
    (("--grace", "-1"), {}, "grace must be 0 or more seconds, got -1"),
    ((), {"TWINSEARCH_GRACE": "-0.5"}, "grace must be 0 or more seconds, got -0.5"),
])
def test_out_of_range_values_exit_2(argv, env, words, capsys, monkeypatch, tmp_path):
    import twinsearch.server.app

    def started(settings):  # what the command would do next: serve until a signal comes
        raise AssertionError(f"started a server with {settings}")

    monkeypatch.setattr(twinsearch.server.app, "start_server", started)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert serve.run(parse("--data-dir", str(tmp_path / "data"), *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("twinsearch serve: ") and words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("address, port", [("127.0.0.1:0", 0), ("127.0.0.1:65535", 65535), ("[::1]:1", 1)])
def test_ports_in_range_are_taken(address, port):
    assert split_address(address)[1] == port
    settings = serve.settings_from(parse("--address", address, "--grace", "0", "--metrics-port", "0"), {})
    assert settings.address == address and settings.grace_s == 0 and settings.metrics_port == 0


def test_the_address_check_refuses_a_wrapping_port():
    with pytest.raises(ValueError, match="65535"):
        check_address("127.0.0.1:99999")
