"""What the client-side commands share: connection options, output as tables or JSON, error exits.

This is the command-line layer: it reads `TWINSEARCH_ADDRESS` and `TWINSEARCH_TOKEN` for defaults and
prints. The library underneath only logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import json
import os
import re
import socket
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twinsearch.client.errors import TwinsearchError
from twinsearch.client.types import MAX_TIMEOUT_S

DEFAULT_ADDRESS = "localhost:50051"


def positive_seconds(text: str) -> float:
    """argparse type of a duration in seconds: a number > 0, at most MAX_TIMEOUT_S."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 and at most {MAX_TIMEOUT_S:.0e} "
                                         f"(about 31 years), got {text}")
    return value


class CommandLineError(Exception):
    """A problem with what the command line asks for (a file it names cannot be read, ...): one line, exit 2."""


def add_connection_arguments(parser: argparse.ArgumentParser, *, json_output: bool = True,
                             sub: bool = False) -> None:
    """--address, --token, --timeout, --tls, --ca (and --json). With `sub` (on a sub-action's parser
    beside the same options on its parent), they only override the parent's values when given."""

    def default(value):
        return argparse.SUPPRESS if sub else value

    address = os.environ.get("TWINSEARCH_ADDRESS") or DEFAULT_ADDRESS  # set but empty: the default too
    group = parser.add_argument_group("connection")
    group.add_argument("--address", default=default(address),
                       help=f"server HOST:PORT (default: $TWINSEARCH_ADDRESS or {DEFAULT_ADDRESS})")
    group.add_argument("--token", default=default(os.environ.get("TWINSEARCH_TOKEN")),
                       help="bearer token, when the server requires one (default: $TWINSEARCH_TOKEN)")
    group.add_argument("--timeout", type=positive_seconds, default=default(30.0), metavar="S",
                       help="deadline of each call in seconds (default: 30)")
    group.add_argument("--tls", action="store_true", default=default(False), help="connect with TLS")
    group.add_argument("--ca", metavar="PEM", default=default(None),
                       help="root certificates to verify the server with (implies --tls)")
    if json_output:
        parser.add_argument("--json", action="store_true", default=default(False),
                            help="print machine-readable JSON instead of tables")


def connect(args: argparse.Namespace):
    from twinsearch.client.remote import Client

    address = args.address = args.address.strip()
    if not address:
        raise CommandLineError(f"--address is empty: give the server's HOST:PORT (default: {DEFAULT_ADDRESS})")
    _, sep, port = address.rpartition(":")
    if sep and port.isdigit() and not 0 < int(port) < 65536:
        raise CommandLineError(f"--address {address}: port {port} is not a TCP port (1 to 65535)")
    roots = None
    if getattr(args, "ca", None):
        try:
            with open(args.ca, "rb") as f:
                roots = f.read()
        except OSError as exc:
            raise CommandLineError(f"cannot read --ca {args.ca}: {exc.strerror or exc}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in roots:
            raise CommandLineError(f"--ca {args.ca} holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' "
                                   "block): give the certificate, or the CA certificate, the server's TLS uses")
    return Client(args.address, token=args.token, timeout=args.timeout, tls=args.tls or roots is not None,
                  root_certificates=roots)


def handles_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the library's exceptions into one line on stderr and exit status 1 (no traceback); a
    CommandLineError into one line and exit status 2."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except TwinsearchError as exc:
            print(f"error: {exc}{_hint(exc.code, args)}", file=sys.stderr)
            return 1
        except CommandLineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def _hint(code: str, args: argparse.Namespace) -> str:
    """What to do about a failed call, in command-line terms."""
    address = getattr(args, "address", "?")
    if code == "UNAVAILABLE":
        tls = bool(getattr(args, "tls", False) or getattr(args, "ca", None))
        if _listening(address):
            if tls:
                return (f" (something listens at {address}, but the TLS connection failed: does the server serve "
                        "TLS, with a certificate that --ca (or the system's roots) verifies?)")
            return (f" (something listens at {address}, but the connection failed: if the server serves TLS, "
                    "give --tls, and --ca PEM for a certificate of your own)")
        return f" (is a server running at {address}? start one with `twinsearch serve`)"
    if code == "DEADLINE_EXCEEDED":
        return (f" (no answer from {address} within --timeout {getattr(args, 'timeout', 0):g} s: give a longer "
                "--timeout if the server is busy)")
    if code == "UNAUTHENTICATED":
        return " (give the server's token with --token TOKEN or in $TWINSEARCH_TOKEN)"
    return ""


def _listening(address: str) -> bool:
    """Whether a TCP connection to a HOST:PORT address opens (False for other forms of address)."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or "/" in host or (":" in host and not address.startswith("[")):
        return False
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=1.0):
            return True
    except (OSError, ValueError, OverflowError):
        return False


def confirmed(question: str) -> bool:
    """Ask on the terminal; without one (a script, a pipe), refuse rather than guess (CommandLineError)."""
    try:
        interactive = sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        raise CommandLineError(f"{question} Not without confirmation: stdin is not a terminal; "
                               "pass --yes to delete")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def jsonable(obj: Any) -> Any:
    """Dataclasses, enums, numpy arrays and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if hasattr(type(obj), "known"):
            out["known"] = obj.known
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(jsonable(obj), indent=2))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    # A column of numbers is right-aligned, also where some rows have none ("-").
    numeric = [any(row[i] is not None for row in rows) and all(row[i] is None or _numeric(row[i]) for row in rows)
               for i in range(len(headers))]

    def pad(v: str, w: int, right: bool) -> str:
        fill = " " * (w - _width(v))
        return fill + v if right else v + fill

    def line(values: Sequence[str]) -> str:
        return "  ".join(pad(v, w, num) for v, w, num in zip(values, widths, numeric, strict=True))

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(s.rstrip() for s in out)


def _width(text: str) -> int:
    """The columns `text` takes on a terminal: wide (CJK) characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


_NUMBER = re.compile(r"^-?[\d.,]+ ?(%|ms|s|/s)?$")


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float, np.integer, np.floating)) or (
        isinstance(value, str) and bool(_NUMBER.match(value)))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return printable(str(value))


def printable(text: str) -> str:
    """`text` with what a terminal would act on (escape sequences, carriage returns, tabs, other control
    and unprintable characters) written as escapes: labels and ids are any text, and a table shows them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def add_threshold_arguments(parser: argparse.ArgumentParser, *, gallery: bool = True) -> None:
    default = ("the gallery's threshold, if it has one, else the model's default calibrated operating point "
               "(see `twinsearch info`)" if gallery else "the model's default calibrated operating point (see "
               "`twinsearch info`)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, metavar="D",
                       help=f"decide 'same' when distance <= D (a distance in [0, 2]); default: {default}")
    group.add_argument("--target-far", type=float, metavar="F",
                       help="choose the threshold for this false-accept rate (e.g. 0.01) from the model's calibration")
