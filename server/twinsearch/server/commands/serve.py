"""`twinsearch serve`: run the gRPC server over a data folder until SIGTERM or SIGINT.

Every flag has a `TWINSEARCH_*` environment variable (flag wins); this command is the only place
that reads the environment. It prints two lines once the server is up:

    twinsearch serving on HOST:PORT
    twinsearch model NAME (fingerprint F), data folder /abs/path, 2 galleries: staff (120 items), ...

(the first with the real port when --address asks for port 0; `ServerProcess` reads it); with several
models (`--model NAME=PATH` repeated, or `--models DIR`) the second line names them all, and a line
per model says what loading it cost. A gallery the server cannot serve (its model is not held) gets
one line saying what to do. It exits 0
after a graceful shutdown. A server that cannot start prints one line naming the reason and what to
do: exit status 2 for a port in use and a data folder that is a file or not writable (what the
command line asks for), 1 for other failures (a bad model file, a data folder another process holds).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from twinsearch.server import settings as s
from twinsearch.server.index import IndexParams

log = logging.getLogger(__name__)

# (flag, environment variable, type, default, help)
_OPTIONS: tuple[tuple[str, str, type, object, str], ...] = (
    ("--data-dir", "TWINSEARCH_DATA_DIR", Path, Path("twinsearch-data"),
     "folder of the gallery store (SQLite, index snapshots, kept images); created if missing"),
    ("--address", "TWINSEARCH_ADDRESS", str, s.DEFAULT_ADDRESS, "HOST:PORT to listen on (port 0: a free port)"),
    ("--token", "TWINSEARCH_TOKEN", str, None,
     "require 'authorization: Bearer TOKEN' metadata on every call but health (default: none, calls need no "
     "token; the variable keeps it out of the process list)"),
    ("--tls-cert", "TWINSEARCH_TLS_CERT", Path, None,
     "PEM certificate chain: serve TLS (with --tls-key; default: none, plain TCP)"),
    ("--tls-key", "TWINSEARCH_TLS_KEY", Path, None, "PEM private key of --tls-cert"),
    ("--metrics-port", "TWINSEARCH_METRICS_PORT", int, None,
     "serve Prometheus metrics over HTTP on this port (0: a free port, printed at start-up; default: none, "
     "no metrics endpoint)"),
    ("--metrics-address", "TWINSEARCH_METRICS_ADDRESS", str, "127.0.0.1", "interface of the metrics endpoint"),
    ("--max-message-mb", "TWINSEARCH_MAX_MESSAGE_MB", int, s.DEFAULT_MAX_MESSAGE_MB,
     "largest request or answer in MiB"),
    ("--max-batch", "TWINSEARCH_MAX_BATCH", int, s.DEFAULT_MAX_BATCH,
     "most images, pairs, probes or items in one request"),
    ("--max-pixels", "TWINSEARCH_MAX_PIXELS", int, s.DEFAULT_MAX_PIXELS, "most pixels (width x height) per image"),
    ("--max-k", "TWINSEARCH_MAX_K", int, s.DEFAULT_MAX_K, "largest k for identify and search"),
    ("--batch-wait-ms", "TWINSEARCH_BATCH_WAIT_MS", float, s.DEFAULT_BATCH_WAIT_MS,
     "how long a busy batcher waits to gather concurrent calls (an idle one runs a call at once)"),
    ("--search-regather", "TWINSEARCH_SEARCH_REGATHER", float, s.DEFAULT_SEARCH_REGATHER,
     "when a busy gallery search comes back to fewer waiting probes than its last runs held, it waits up to "
     "this fraction of the last run's time for their callers (0 to 1; 0: never)"),
    ("--torch-threads", "TWINSEARCH_TORCH_THREADS", int, 0, "encoder threads (0: one per CPU)"),
    ("--workers", "TWINSEARCH_WORKERS", int, s.DEFAULT_WORKERS, "gRPC handler threads"),
    ("--migration-batch", "TWINSEARCH_MIGRATION_BATCH", int, s.DEFAULT_MIGRATION_BATCH,
     "images a gallery migration embeds per encoder pass (calls waiting for the encoder go between passes)"),
    ("--half-screen-max-rows", "TWINSEARCH_HALF_SCREEN_MAX_ROWS", int, IndexParams.half_screen_max_rows,
     f"a lone query against an exact gallery of {IndexParams.half_screen_rows:,} items up to this many picks "
     "its candidates from a float16 copy of the vectors (the same answers; at 100k items the search took 40%% less "
     "time on 2 cores; the copy takes half the index's memory again); 0: no copy"),
    ("--grace", "TWINSEARCH_GRACE", float, s.DEFAULT_GRACE_S, "seconds calls in flight get at shutdown"),
    ("--encoders", "TWINSEARCH_ENCODERS", str, "local",
     "where images are embedded: 'local' (this process) or 'ray' (encoder replicas on a Ray cluster; needs "
     "the twinsearch[ray] extra)"),
    ("--ray", "TWINSEARCH_RAY", str, None,
     "with --encoders ray: HOST:PORT of the Ray cluster's head (default: a local Ray instance)"),
    ("--encoder-replicas", "TWINSEARCH_ENCODER_REPLICAS", int, s.DEFAULT_ENCODER_REPLICAS,
     "with --encoders ray: encoder replicas (Ray actors, one model each; a GPU each when the cluster has them)"),
    ("--ray-object-store-mb", "TWINSEARCH_RAY_OBJECT_STORE_MB", int, None,
     "with --encoders ray and no --ray: the local Ray instance's object store in MiB, at least 75 (default: "
     "Ray's own choice, a share of the memory)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Each option can also be set with the environment variable named after it."
    parser.add_argument(
        "--model", action="append", default=None, metavar="[NAME=]PATH",
        help="a model to serve: a model file, or the name of a model shipped with twinsearch (omniglot, "
             "signatures), optionally under NAME (default: the name in its card); repeat it to serve several, "
             "the first being the default model (default: omniglot) [TWINSEARCH_MODEL: one model]")
    parser.add_argument(
        "--models", type=Path, default=None, metavar="DIR",
        help="serve every model file (*.tsm) in DIR, each named by its file name without .tsm, in name order, "
             "after those of --model; the first is the default [TWINSEARCH_MODELS]")
    for flag, env, kind, default, text in _OPTIONS:
        shown = "" if default is None else f" (default: {default})"
        parser.add_argument(flag, type=kind, default=None, metavar=flag.lstrip("-").split("-")[-1].upper(),
                            help=f"{text}{shown} [{env}]")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> s.ServerSettings:
    """The server settings from flags, then `TWINSEARCH_*` variables, then defaults."""
    values: dict[str, object] = {}
    for flag, env, kind, default, _ in _OPTIONS:
        attr = flag.lstrip("-").replace("-", "_")
        value = getattr(args, attr, None)
        if value is None and environ.get(env, "") != "":
            try:
                value = kind(environ[env])
            except ValueError:
                raise ValueError(f"{env}={environ[env]!r} is not a valid {kind.__name__}") from None
        values[attr] = default if value is None else value
    engine = s.EngineSettings(
        max_batch=values["max_batch"], max_pixels=values["max_pixels"], max_k=values["max_k"],
        batch_wait_ms=values["batch_wait_ms"], search_regather=values["search_regather"],
        torch_threads=values["torch_threads"],
        migration_batch=values["migration_batch"],
        encoders=values["encoders"], encoder_replicas=values["encoder_replicas"], ray_address=values["ray"],
        ray_object_store_mb=values["ray_object_store_mb"],
        store={"index": IndexParams(half_screen_max_rows=values["half_screen_max_rows"])},
    )
    # Told here, before anything loads, with exit status 2: a port out of range (gRPC would listen on
    # another one), a negative grace period.
    from twinsearch.server.startup import MAX_PORT, split_address

    split_address(values["address"])
    if values["metrics_port"] is not None and not 0 <= values["metrics_port"] <= MAX_PORT:
        raise ValueError(f"metrics_port must be from 0 to {MAX_PORT} (0: a free port), got {values['metrics_port']}")
    if not values["grace"] >= 0:
        raise ValueError(f"grace must be 0 or more seconds, got {values['grace']:g}")
    models = _model_specs(args, environ)
    single = len(models) == 1 and models[0][0] is None
    return s.ServerSettings(
        data_dir=values["data_dir"], model_path=models[0][1] if single else None,
        models=() if single else tuple(models), address=values["address"],
        token=values["token"], tls_cert=values["tls_cert"], tls_key=values["tls_key"],
        metrics_port=values["metrics_port"], metrics_address=values["metrics_address"],
        max_message_mb=values["max_message_mb"], workers=values["workers"], grace_s=values["grace"],
        engine=engine,
    )


def _model_specs(args: argparse.Namespace, environ: Mapping[str, str]) -> list[tuple[str | None, Path]]:
    """(name or None, path) of each model to serve, in order: --model values, then the --models folder's."""
    from twinsearch.server.models import check_model_option, model_files, parse_model_option

    given = getattr(args, "model", None) or ([environ["TWINSEARCH_MODEL"]] if environ.get("TWINSEARCH_MODEL") else [])
    for value in given:
        check_model_option(value, "--model" if getattr(args, "model", None) else "TWINSEARCH_MODEL")
    specs = [(name, Path(path)) for name, path in (parse_model_option(v) for v in given)]
    folder = getattr(args, "models", None) or (Path(environ["TWINSEARCH_MODELS"])
                                               if environ.get("TWINSEARCH_MODELS") else None)
    if folder is not None:
        specs += [(f.stem, f) for f in model_files(folder)]
    return specs


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, os.environ)
    except ValueError as exc:
        print(f"twinsearch serve: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from twinsearch.client.errors import TwinsearchError
    from twinsearch.encoder.errors import ModelFileError
    from twinsearch.server.app import start_server
    from twinsearch.server.startup import StartupError, host_port, model_line, startup_line

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            running = start_server(settings, log_notes=False)  # printed below, with the other start-up lines
        except StartupError as exc:  # a port in use, a data folder that cannot be used
            print(f"twinsearch serve: {exc}", file=sys.stderr)
            return 2
        except (ModelFileError, OSError, ValueError, RuntimeError, TwinsearchError) as exc:
            # A bad model file, an address in use, unreadable TLS files, a store held by another process,
            # with --encoders ray: Ray not installed, its cluster unreachable.
            print(f"twinsearch serve: {exc}", file=sys.stderr)
            return 1
        # ray.init (--encoders ray) puts Ray's own SIGTERM handler in place of ours: it would exit at once,
        # without stopping the server, after a stack dump on stderr. Ours again, so SIGTERM stops gracefully.
        for sig in previous:
            signal.signal(sig, on_signal)
        print(f"twinsearch serving on {running.address}", flush=True)
        engine = running.engine
        served = [(m.name, m.fingerprint) for m in engine.models]
        print(f"twinsearch {startup_line(served, settings.data_dir, engine.list_galleries())}", flush=True)
        if len(served) > 1:
            for m in engine.models:
                print(f"twinsearch {model_line(m)}", flush=True)
        for note in engine.startup_notes:
            print(f"twinsearch warning: {note}", flush=True)
        if running.metrics_port is not None:
            print(f"twinsearch metrics on http://{host_port(settings.metrics_address, running.metrics_port)}/metrics",
                  flush=True)
        while not stop.wait(0.5):
            pass
        running.stop(settings.grace_s)
        print("twinsearch stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
