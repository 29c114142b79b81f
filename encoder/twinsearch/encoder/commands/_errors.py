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


def range_error(args: argparse.Namespace, ranges) -> str | None:
    """The usage message for the first flag whose value lies outside its range, or None. `ranges`: (flag,
    attribute, lowest, highest); a bound in a list is allowed itself ([0]: 0 or more), a bare one is not (0:
    above 0); None: no bound. An attribute that is None (not given) is not checked."""
    for flag, name, low, high in ranges:
        value = getattr(args, name)
        if value is None:
            continue
        words = []
        if low is not None:
            words.append(f"at least {low[0]}" if isinstance(low, list) else f"above {low}")
        if high is not None:
            words.append(f"at most {high[0]}" if isinstance(high, list) else f"below {high}")
        below = low is not None and (value < low[0] if isinstance(low, list) else value <= low)
        above = high is not None and (value > high[0] if isinstance(high, list) else value >= high)
        if below or above:
            return f"{flag} must be {' and '.join(words)}, got {value:g}"
    return None


def device_error(device: str | None) -> str | None:
    """The usage message for a --device that this machine cannot run the model on, or None: told before the
    data is read, not as a traceback from torch."""
    if not device:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        return f"--device takes cpu, cuda, cuda:N or mps, got {device!r}"
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return (f"--device {device}: no CUDA GPU is usable here (this torch build "
                    f"{'has CUDA' if torch.version.cuda else 'is CPU-only'}); leave --device out to use the CPU")
        if parsed.index is not None and parsed.index >= count:
            return f"--device {device}: this machine has {count} CUDA device{'s' if count > 1 else ''}"
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available here; leave --device out to use the CPU"
    elif parsed.type not in ("cpu", "cuda", "mps"):
        return f"--device takes cpu, cuda, cuda:N or mps, got {device!r}"
    return None
