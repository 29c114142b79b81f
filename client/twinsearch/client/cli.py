"""The `twinsearch` command line.

Each subcommand lives in the package that owns it and is imported only when it is chosen, so
`twinsearch --help` and the client-side commands never import torch or faiss. A subcommand module
provides two functions:

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int        # the process exit status

and optionally `parse_args(parser, argv) -> argparse.Namespace` when parsing takes more than
`parser.parse_args` (train's presets set defaults that the flags given then override).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from twinsearch.client.version import package_version

SERVER_EXTRA = ("torch", "faiss")


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    module: str
    # Top-level packages of the server (or Ray) extra the command needs. Checked before the module is imported:
    # the modules import them only inside `run`, so that `--help` stays fast.
    needs: tuple[str, ...] = ()


COMMANDS: tuple[Command, ...] = (
    Command("train", "train an encoder on a folder of labelled images and write a model file",
            "twinsearch.encoder.commands.train", needs=("torch",)),
    Command("evaluate", "measure a model: pair verification, N-way k-shot accuracy, Recall@1, MAP@R",
            "twinsearch.encoder.commands.evaluate", needs=("torch",)),
    Command("serve", "run the gRPC server over a data folder", "twinsearch.server.commands.serve",
            needs=SERVER_EXTRA),
    Command("backup", "copy a server's data folder, consistent, while it serves", "twinsearch.server.commands.backup",
            needs=SERVER_EXTRA),
    Command("index", "bulk-enroll a folder tree (one folder per class), or embedded vectors, into a gallery",
            "twinsearch.client.commands.index"),
    Command("embed", "embed a folder tree, zip or manifest on Ray into Parquet files of vectors",
            "twinsearch.server.commands.embed", needs=("torch", "ray", "pyarrow")),
    Command("enroll", "enroll a few image files under one class", "twinsearch.client.commands.enroll"),
    Command("verify", "are two images the same class? (1:1)", "twinsearch.client.commands.verify"),
    Command("verify-class", "is this image the enrolled class LABEL? (1:1 against a class)",
            "twinsearch.client.commands.verify_class"),
    Command("identify", "which enrolled class is this image, or unknown? (1:N)",
            "twinsearch.client.commands.identify"),
    Command("search", "the nearest enrolled items of an image", "twinsearch.client.commands.search"),
    Command("delete", "delete a class or items from a gallery", "twinsearch.client.commands.delete"),
    Command("galleries", "list, show, create, change, delete or migrate galleries, and list their classes",
            "twinsearch.client.commands.galleries"),
    Command("info", "show the server's model, thresholds and galleries", "twinsearch.client.commands.info"),
    Command("demo", "one-shot Omniglot demo end to end: serve, enroll, identify, verify, report",
            "twinsearch.client.commands.demo", needs=SERVER_EXTRA),
)


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(c.name) for c in COMMANDS)
    listing = "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="twinsearch",
        description="Verification (1:1) and one-shot identification (1:N) by Siamese embeddings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{listing}\n\nRun `twinsearch COMMAND --help` for the options of one command.",
        usage="twinsearch [-h] [-v] [--version] COMMAND [options]",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"twinsearch {package_version()}")
    parser.add_argument("command", nargs="?", metavar="COMMAND", help="one of the commands below")
    return parser


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


RAY_EXTRA = ("ray", "pyarrow")


def _missing_extra(command: Command, missing: Sequence[str]) -> SystemExit:
    extras = sorted({"ray" if name.split(".")[0] in RAY_EXTRA else "server" for name in missing}, reverse=True)
    return SystemExit(
        f"twinsearch {command.name}: this command needs {' and '.join(missing)}, which is not installed.\n"
        f"Install the {' and '.join(extras)} extra{'s' if len(extras) > 1 else ''}: "
        f"pip install 'twinsearch[{','.join(extras)}]'"
    )


def _load(command: Command):
    missing = [p for p in command.needs if not _installed(p)]
    if missing:
        raise _missing_extra(command, missing)
    try:
        return importlib.import_module(command.module)
    except ImportError as exc:
        raise _missing_extra(command, [exc.name or str(exc)]) from exc


def _quiet_grpc(command: Command) -> None:
    """Keep gRPC's own log lines (a failed TLS handshake, at each retry) off stderr, where the command says what
    went wrong in one line: none for the client commands, errors only for `serve`, whose log keeps what gRPC
    reports as one. Set before grpc is imported, as grpc reads the variable then; GRPC_VERBOSITY or GRPC_TRACE
    set by the user is kept, and a process that imported grpc already (main called in-process) is left alone."""
    if "grpc" in sys.modules or "GRPC_VERBOSITY" in os.environ or "GRPC_TRACE" in os.environ:
        return
    os.environ["GRPC_VERBOSITY"] = "ERROR" if command.name == "serve" else "NONE"


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Split global options from the command and its own options.
    split = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    top_args = top.parse_args(argv[: split + 1])
    if top_args.command is None:
        top.print_help()
        return 2
    by_name = {c.name: c for c in COMMANDS}
    command = by_name.get(top_args.command)
    if command is None:
        top.error(f"unknown command {top_args.command!r}; choose from {', '.join(by_name)}")
    _quiet_grpc(command)
    module = _load(command)
    parser = argparse.ArgumentParser(prog=f"twinsearch {command.name}", description=command.summary)
    module.add_arguments(parser)
    parse = getattr(module, "parse_args", None)
    args = parse(parser, argv[split + 1:]) if parse else parser.parse_args(argv[split + 1:])
    level = logging.WARNING - 10 * min(top_args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faiss announces at INFO which build it loaded ("Loading faiss with AVX2 support."): noise, even with -v.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is seen below
    except BrokenPipeError:
        # The reader went away (`twinsearch ... --json | head -1`). As the Python docs advise: point
        # stdout at devnull so that the flush at exit does not fail again, and stop quietly with the
        # status a shell gives a command killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
