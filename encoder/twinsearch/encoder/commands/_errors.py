"""How the encoder's commands report a data set they cannot read or split: one line, no traceback."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError


def data_error_message(command: str, exc: Exception, data: str | None, class_depth: int | None,
                       split: str | None = None) -> str:
    """`twinsearch COMMAND: what went wrong`, with a hint when the tree looks like it has deeper classes."""
    message = f"twinsearch {command}: {exc}"
    if data and class_depth:
        from ..data.layout import deeper_class_depth

        deeper = deeper_class_depth(data, class_depth, split)
        if deeper is not None:
            message += (f" (the images of {data} sit in folders one level below the classes read at class "
                        f"depth {class_depth}: try --class-depth {deeper})")
    return message


def reports_data_errors(command: str) -> Callable:
    """Decorate a command's `run(args)`: a DataError becomes one line on stderr and exit status 2."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def wrapper(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except DataError as exc:
                print(data_error_message(command, exc, getattr(args, "data", None),
                                         getattr(args, "class_depth", None), getattr(args, "split", None)),
                      file=sys.stderr)
                return 2

        return wrapper

    return decorate


def output_file_error(flag: str, path: str | None, example: str) -> str | None:
    """The usage message for an output file that cannot be written where it is asked for, or None: told
    before the work whose result it holds, not after it. `example`: a file name to suggest in a folder."""
    if not path:
        return None
    target = Path(path)
    if target.is_dir():
        return f"{flag} {path} is a folder; give a file name in it, such as {target / example}"
    folder = target.parent
    if not folder.is_dir():
        return f"{flag} {path}: the folder {folder} does not exist; create it first"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{flag} {path}: the folder {folder} is not writable"
    return None
