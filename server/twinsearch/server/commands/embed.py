"""`twinsearch embed SOURCE --out DIR`: embed a folder tree, a zip of one or a manifest on Ray, into
Parquet files of vectors (`twinsearch.server.cluster.pipeline`), for `twinsearch index --vectors`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from twinsearch.client.commands._common import handles_errors, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Embed every image of SOURCE with a Ray Data pipeline (decoding and preprocessing in CPU tasks, a pool "
        "of encoder replicas, one GPU each when the cluster has GPUs) and write the vectors as Parquet files in "
        "DIR: client_id, label, metadata, vector; the files record the model's name, fingerprint and "
        "dimension. SOURCE is a folder tree (one folder per class, as for `twinsearch index`), a zip of one, "
        "or a manifest (.csv or .parquet) with a path column, a label column and optional metadata columns. "
        "Client ids are those `twinsearch index` gives the same files. The workers read the images by path: on a "
        "cluster of several machines SOURCE must be on a file system every node mounts at the same path (DIR is "
        "written here, by this command). Running it again over the same SOURCE "
        "and DIR embeds only the rows DIR lacks. Images that cannot be embedded are listed in "
        "DIR/failures.jsonl and do not stop the run (exit status 1 then, unless --allow-partial)."
    )
    parser.add_argument("source", metavar="SOURCE", help="folder tree, zip of one, or .csv/.parquet manifest")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the Parquet files (created)")
    parser.add_argument("--model", metavar="M", default=None,
                        help="model file, or the name of a shipped model (default: omniglot); use the model "
                             "of the server whose galleries the vectors go to")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="join the Ray cluster at ADDRESS (HOST:PORT of its head, or 'auto'); default: start "
                             "a local Ray instance for this run and stop it afterwards")
    parser.add_argument("--encoders", type=int, default=0, metavar="N",
                        help="encoder replicas (Ray actors, one model each; default 0: one per GPU of the "
                             "cluster, or without GPUs one per CPU, as far as its memory holds 1 GiB for each)")
    parser.add_argument("--batch", type=int, default=256, metavar="B",
                        help="images per decode task and per forward pass (default: %(default)s)")
    parser.add_argument("--class-depth", type=int, default=1, metavar="N",
                        help="folder depth that names the class, for folders and zips (default: %(default)s)")
    parser.add_argument("--path-column", default="path", metavar="NAME",
                        help="a manifest's column of image paths, relative to the manifest's folder or absolute "
                             "(default: %(default)s)")
    parser.add_argument("--label-column", default="label", metavar="NAME",
                        help="a manifest's column of class labels; its other columns are metadata "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, metavar="T",
                        help="torch threads per replica (default 0: on a local instance the cores shared "
                             "among the replicas; on a cluster what Ray gives the actor)")
    parser.add_argument("--decode", choices=("auto", "tasks", "replicas"), default="auto",
                        help="where images are read and preprocessed: in CPU tasks of their own, or by the "
                             "encoder replicas themselves (default auto: tasks when the cluster has GPUs, the "
                             "replicas on CPUs only, where both share the same cores)")
    parser.add_argument("--object-store-mb", type=int, default=None, metavar="MB",
                        help="object store of the local Ray instance in MiB (default: Ray's own choice)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit with status 0 even when some images could not be embedded")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@handles_errors
def run(args: argparse.Namespace) -> int:
    from twinsearch.server.cluster.runtime import RayMissing, RaySettings, RayUnavailable, require_ray

    try:
        require_ray(data=True)
    except RayMissing as exc:
        print(f"twinsearch embed: {exc}", file=sys.stderr)
        return 2
    from twinsearch.encoder.errors import ModelFileError
    from twinsearch.server.cluster.pipeline import FAILURES_FILE, EmbedSettings, embed_to_parquet

    quiet_ray()
    bar = None
    if not args.no_progress and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="img", desc="embed", dynamic_ncols=True, file=sys.stderr)

    def progress(total: int, done: int, failed: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix(failed=failed, refresh=False)

    try:
        with ray_notes_to_stderr():
            report = embed_to_parquet(
                args.source, args.out, model=args.model, class_depth=args.class_depth,
                columns=(args.path_column, args.label_column),
                settings=EmbedSettings(encoders=args.encoders, batch=args.batch, threads=args.threads,
                                       decode=args.decode),
                ray_settings=RaySettings(args.ray, None, args.object_store_mb), progress=progress)
    except (RayUnavailable, ModelFileError, ValueError, OSError) as exc:  # OSError: --out cannot be written
        print(f"twinsearch embed: {exc}", file=sys.stderr)
        return 1
    except ray_errors() as exc:  # the pipeline failed (replicas that cannot start, ...): Ray logged the details
        print(f"twinsearch embed: the Ray pipeline failed: {_last_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    summary = {"out": str(report.out), "model": report.model, "fingerprint": report.fingerprint,
               "found": report.found, "embedded": report.embedded, "skipped": report.skipped,
               "failed": report.failed, "seconds": round(report.seconds, 3),
               "images_per_s": round(report.images_per_s, 1)}
    if args.json:
        print(json.dumps({**summary, "failures": [{"path": f.path, "reason": f.reason} for f in report.failures]},
                         indent=2))
    else:
        if report.failures:
            print(f"\n{report.failed} images not embedded (all in {Path(args.out) / FAILURES_FILE}):")
            for f in report.failures[:20]:
                print(f"  {f.path}: {f.reason}")
            if report.failed > 20:
                print(f"  ... and {report.failed - 20} more")
        print()
        print(table([[report.found, report.embedded, report.skipped, report.failed, f"{report.seconds:.1f}",
                      f"{report.images_per_s:.{0 if report.images_per_s >= 10 else 1}f}"]],
                    ["found", "embedded", "skipped", "failed", "seconds", "images/s"]))
        print(f"model {report.model} ({report.fingerprint}); vectors in {report.out}")
    if report.failed and not args.allow_partial:
        print(f"error: {report.failed} of {report.found} images not embedded (--allow-partial accepts a partial run)",
              file=sys.stderr)
        return 1
    return 0


def ray_errors() -> tuple[type[BaseException], ...]:
    """Ray's exception classes that end a pipeline (a task or an actor that failed)."""
    from ray.exceptions import RayError

    return (RayError,)


def _last_line(exc: BaseException) -> str:
    """The last line of a Ray error's text: the cause, after the remote traceback it carries."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# Ray Data gives each actor of a pool its function and context as object references and lets Ray restart
# the actor; for any such actor Ray's core (C++, in this process) logs once, at ERROR and straight to file
# descriptor 2, that a restart fails if those objects are lost (ray-project/ray#53727). No logger or
# option of ours reaches it, nor can the pipeline pass the objects otherwise (a pool of a class without
# arguments draws it too). The driver holds the references for the whole run, so a replica restarted
# during it finds them: the line says nothing about this run. Ray keeps it in its driver log
# (python-core-driver-*.log among the session's logs).
RAY_POOL_NOTE = re.compile(rb"\[[^\]\n]*\] core_worker\.cc:\d+: [^\n]*has constructor arguments in the object store"
                           rb"[^\n]*\n?")
# How long leaving the `with` block waits for the last of stderr to pass the filter.
FILTER_DRAIN_S = 5.0


@contextlib.contextmanager
def ray_notes_to_stderr() -> Iterator[None]:
    """While Ray works: what its driver prints on stdout (a replica that died and was restarted, ...)
    goes to stderr, so that stdout holds the command's own output (one JSON document with --json); of
    what goes to stderr, Ray's line about the constructor arguments of its actor pools (RAY_POOL_NOTE)
    is dropped, and the rest passes as it came."""
    with stderr_without(RAY_POOL_NOTE), contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def stderr_without(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """For the `with` block, file descriptor 2 is a pipe, read by a thread that writes what comes through to
    the real stderr less the matches of `pattern`. The descriptor, not `sys.stderr`: Ray's C++ core writes
    to it directly. Each read is filtered on its own, with no waiting for the end of a line, so a progress
    bar that redraws its line shows at once; a match that one read splits (more than 64 KiB waiting in the
    pipe) passes. Where stderr is no open descriptor, nothing is filtered."""
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    forwarder = threading.Thread(target=_forward, args=(read_end, os.dup(terminal), pattern),
                                 name="stderr-filter", daemon=True)
    forwarder.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the pipe ends once no one holds its writing end: the thread reads to the end
        os.close(terminal)
        # A process started inside the block may hold the pipe still (Ray's, with RAY_LOG_TO_STDERR=1):
        # then the thread forwards its lines until it exits.
        forwarder.join(FILTER_DRAIN_S)


def _forward(source: int, target: int, pattern: re.Pattern[bytes]) -> None:
    """Copy `source` to `target` less the matches of `pattern`, until `source` ends; closes both."""
    try:
        while chunk := os.read(source, 65536):
            kept = memoryview(pattern.sub(b"", chunk))
            # stderr closed: keep reading all the same, so that no writer blocks on a full pipe
            with contextlib.suppress(OSError):
                while kept:
                    kept = kept[os.write(target, kept):]
    finally:
        os.close(source)
        os.close(target)


def quiet_ray() -> None:
    """Ray's own log lines and warnings about pool sizes would fight with the progress bar: keep its
    warnings and errors only."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It would warn that its bars are off: they are, on purpose (ours is on).
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
