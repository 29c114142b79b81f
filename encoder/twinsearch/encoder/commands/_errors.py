"""How the encoder's commands report a data set they cannot read or split: one line, no traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

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
