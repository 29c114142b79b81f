"""`twinsearch serve` settings: flags win over TWINSEARCH_* variables, which win over defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from twinsearch.server.commands import serve
from twinsearch.server.settings import DEFAULT_ADDRESS, DEFAULT_MAX_BATCH, ServerSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_help_renders_every_option():
    """argparse formats help with %: a bare % in any option's text breaks `twinsearch serve --help`."""
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    text = parser.format_help()
    assert "--half-screen-max-rows" in text and "--search-regather" in text and "40% less" in text


def test_defaults():
    settings = serve.settings_from(parse(), {})
    assert settings.address == DEFAULT_ADDRESS and settings.token is None and settings.model_path is None
    assert settings.engine.max_batch == DEFAULT_MAX_BATCH and settings.metrics_port is None


def test_flags_win_over_environment():
    env = {"TWINSEARCH_ADDRESS": "0.0.0.0:7000", "TWINSEARCH_MAX_K": "9", "TWINSEARCH_TOKEN": "from-env",
           "TWINSEARCH_DATA_DIR": "/srv/data", "TWINSEARCH_METRICS_PORT": "9100", "TWINSEARCH_MAX_PIXELS": ""}
    settings = serve.settings_from(parse("--address", "127.0.0.1:0", "--max-batch", "5"), env)
    assert settings.address == "127.0.0.1:0"          # flag
    assert settings.engine.max_batch == 5              # flag
    assert settings.engine.max_k == 9                  # environment
    assert settings.token == "from-env" and settings.metrics_port == 9100
    assert settings.data_dir == Path("/srv/data")
    assert settings.engine.max_pixels == 40_000_000    # an empty variable counts as unset
    assert serve.settings_from(parse("--search-regather", "0"), {}).engine.search_regather == 0.0


@pytest.mark.parametrize("argv, env, message", [
    ((), {"TWINSEARCH_MAX_K": "many"}, "TWINSEARCH_MAX_K"),
    (("--tls-cert", "c.pem"), {}, "both"),
    (("--max-batch", "0"), {}, "max_batch"),
    (("--address", "nowhere"), {}, "HOST:PORT"),
    (("--half-screen-max-rows", "-1"), {}, "half_screen_max_rows"),
    (("--search-regather", "1.5"), {}, "search_regather"),
])
def test_bad_settings_are_refused(argv, env, message):
    with pytest.raises(ValueError, match=message):
        serve.settings_from(parse(*argv), env)


def test_the_float16_screen_setting_reaches_the_store(tmp_path):
    from twinsearch.server.engine import _open_store
    from twinsearch.server.index import IndexParams

    assert serve.settings_from(parse(), {}).engine.store["index"] == IndexParams()
    settings = serve.settings_from(parse("--data-dir", str(tmp_path)), {"TWINSEARCH_HALF_SCREEN_MAX_ROWS": "0"})
    store = _open_store(tmp_path, settings.engine)
    try:
        assert store.settings.index.half_screen_max_rows == 0
    finally:
        store.close()


def test_bad_settings_exit_2(capsys):
    assert serve.run(parse("--max-k", "0")) == 2
    assert "max_k" in capsys.readouterr().err


def test_settings_object_checks():
    with pytest.raises(ValueError):
        ServerSettings(data_dir=Path("d"), token="  ")
