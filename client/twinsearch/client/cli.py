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
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    module: str


COMMANDS: tuple[Command, ...] = (
    Command("train", "train an encoder on a folder of labelled images and write a model file",
            "twinsearch.encoder.commands.train"),
    Command("evaluate", "measure a model: pair verification, N-way k-shot accuracy, Recall@1, MAP@R",
            "twinsearch.encoder.commands.evaluate"),
    Command("serve", "run the gRPC server over a data folder", "twinsearch.server.commands.serve"),
    Command("index", "bulk-enroll a folder tree (one folder per class) into a gallery",
            "twinsearch.client.commands.index"),
    Command("verify", "are two images the same class? (1:1)", "twinsearch.client.commands.verify"),
    Command("identify", "which enrolled class is this image, or unknown? (1:N)",
            "twinsearch.client.commands.identify"),
    Command("galleries", "list, create or delete galleries", "twinsearch.client.commands.galleries"),
    Command("info", "show the server's model, thresholds and galleries", "twinsearch.client.commands.info"),
    Command("demo", "one-shot Omniglot demo end to end: serve, enroll, identify, verify, report",
            "twinsearch.client.commands.demo"),
)


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(c.name) for c in COMMANDS)
    listing = "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="twinsearch",
        description="Verification (1:1) and one-shot identification (1:N) by Siamese embeddings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{listing}\n\nRun `twinsearch COMMAND --help` for the options of one command.",
        usage="twinsearch [-h] [-v] COMMAND [options]",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("command", nargs="?", metavar="COMMAND", help="one of the commands below")
    return parser


def _load(command: Command):
    try:
        return importlib.import_module(command.module)
    except ImportError as exc:
        raise SystemExit(
            f"twinsearch {command.name}: this command needs a part that is not installed ({exc}).\n"
            "Install the server extra: pip install 'twinsearch[server]'"
        ) from exc


def main(argv: Sequence[str] | None = None) -> int:
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
    module = _load(command)
    parser = argparse.ArgumentParser(prog=f"twinsearch {command.name}", description=command.summary)
    module.add_arguments(parser)
    parse = getattr(module, "parse_args", None)
    args = parse(parser, argv[split + 1:]) if parse else parser.parse_args(argv[split + 1:])
    level = logging.WARNING - 10 * min(top_args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
