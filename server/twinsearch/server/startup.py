"""What the server checks before it starts, and the line it reports once it has.

A server that cannot start says so in one line that names the thing and what to do about it, never
with raw errno text: `StartupError` carries that line. The checks run before the model is loaded, so
that a wrong folder or a taken port fails in milliseconds, not after the model and indexes load.

    data_folder(path)      the data folder, created if missing; a file, a folder this user cannot
                           write, a parent that is a file: StartupError
    check_address(addr)    HOST:PORT can be listened on: a port in use, an address not of this
                           machine, a privileged port, an unknown host: StartupError
    check_tls(cert, key)   the TLS files can be read, hold a PEM certificate and private key, and the
                           key is the certificate's: StartupError
    startup_line(...)      "model NAME (fingerprint F), data folder D, 2 galleries: a (10 items), ..."
    model_line(model)      "model NAME: 128-d, 1.2 MiB of weights, loaded in 0.31 s" (several models)
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from twinsearch.client.types import GalleryInfo

# How many galleries the start-up line names before it counts the rest.
SHOWN_GALLERIES = 10


class StartupError(OSError):
    """The server cannot start as configured; the message is one line saying why and what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot start"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def data_folder(path: Path | str) -> Path:
    """`path` as a usable data folder: created (with its parents) if missing, checked writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StartupError(f"the data folder {path} is a file, not a folder: choose a folder "
                           "(it is created if missing)")
    if not path.exists():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_create(path, exc) from None
    if _read_only_file_system(path):  # chown or chmod would not help there (and root passes os.access)
        raise StartupError(f"the data folder {path} is on a read-only file system: choose a folder on a "
                           "writable disk (or mount this one read-write)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"the data folder {path} is not writable by user {_user()}: give that user write "
                           "access to it (chown or chmod), or choose another folder")
    return path


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs here: os.access decides
        return False


def _cannot_create(path: Path, exc: OSError) -> StartupError:
    parent = next((p for p in path.parents if p.exists()), None)
    if exc.errno == errno.ENOTDIR or (parent is not None and not parent.is_dir()):
        return StartupError(f"cannot create the data folder {path}: {parent} is a file: choose a folder elsewhere")
    if exc.errno == errno.EROFS:
        return StartupError(f"cannot create the data folder {path}: its file system is read-only: "
                            "choose a folder on a writable disk")
    if exc.errno == errno.ENOSPC:
        return StartupError(f"cannot create the data folder {path}: the disk is full: free space or choose "
                            "another disk")
    where = f"{parent} is not writable by user {_user()}" if parent is not None else "permission denied"
    return StartupError(f"cannot create the data folder {path}: {where}: create the folder with the right "
                        "owner, or choose another folder")


MAX_PORT = 65535


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" ("[::1]:50051" for IPv6); ValueError when it is not that, or when the
    port lies outside 0..65535 (gRPC would wrap it round to another port, 99999 to 34463)."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"address must be HOST:PORT, got {address!r}") from None
    if not 0 <= number <= MAX_PORT:
        raise ValueError(f"the port of address {address!r} must be from 0 to {MAX_PORT} (0: a free port), "
                         f"got {number}")
    return host.strip("[]") or "0.0.0.0", number


# The flags that set an address, named in what its errors say: (the whole address or its host, its port).
ADDRESS_FLAGS = ("--address", "--address")
METRICS_FLAGS = ("--metrics-address", "--metrics-port")


def check_address(address: str, flags: tuple[str, str] = ADDRESS_FLAGS) -> None:
    """Raise StartupError when nothing could listen on `address` now (for port 0: when its host is
    unknown or not of this machine). `flags`: the options that set its host and port, for the message.

    Binds a plain socket to each address the host resolves to and lets it go: what gRPC would do,
    without its native error log. Another process could still take the port before the server binds
    it; the server's own bind then fails with the same message.
    """
    host, port = split_address(address)
    try:
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise StartupError(f"cannot listen on {address}: unknown host {host!r}: give {flags[0]} an address of "
                           "this machine, such as 127.0.0.1 or 0.0.0.0 (every interface)") from None
    for family, kind, proto, _, sockaddr in resolved:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds its ports
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise address_error(address, exc, flags) from None


def address_error(address: str, exc: BaseException, flags: tuple[str, str] = ADDRESS_FLAGS) -> StartupError:
    """The one-line StartupError for a failure to listen on `address` (set by `flags`: host, port)."""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code == errno.EADDRINUSE or "in use" in text:
        return StartupError(f"address {address} is in use (is another server running?): stop it, or choose "
                            f"another port with {flags[1]}")
    if code == errno.EADDRNOTAVAIL:
        return StartupError(f"cannot listen on {address}: {split_address(address)[0]} is not an address of "
                            f"this machine: give {flags[0]} 127.0.0.1, or 0.0.0.0 for every interface")
    if code in (errno.EACCES, errno.EPERM):
        return StartupError(f"cannot listen on {address}: ports below 1024 need privileges: choose a port "
                            f"of 1024 or more with {flags[1]}")
    where = flags[0] if flags[0] == flags[1] else f"{flags[0]} and {flags[1]}"
    return StartupError(f"cannot listen on {address}: check {where}")


def host_port(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_tls(cert: Path, key: Path) -> None:
    """Raise StartupError unless `cert` holds a PEM certificate chain and `key` its PEM private key
    (readable, not encrypted, the key the certificate's): told before the model loads, where gRPC
    would say only that it cannot add the port."""
    import ssl

    texts = {}
    for flag, path, marker, what in (("--tls-cert", cert, b"-----BEGIN CERTIFICATE-----", "certificate"),
                                     ("--tls-key", key, b"PRIVATE KEY-----", "private key")):
        try:
            texts[flag] = Path(path).read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
        if marker not in texts[flag]:
            raise StartupError(f"{flag} {path} holds no PEM {what} (a '-----BEGIN {what.upper()}-----' block): "
                               f"give the PEM file of the server's {what}")
    if b"ENCRYPTED" in texts["--tls-key"]:
        raise StartupError(f"--tls-key {key} is encrypted: the server needs the key without a passphrase "
                           "(openssl pkey -in KEY -out PLAIN)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):  # the latter: another key type
            raise StartupError(f"--tls-key {key} is not the private key of --tls-cert {cert}: give the key the "
                               "certificate was made for") from None
        raise StartupError(f"--tls-cert {cert} and --tls-key {key} cannot be used for TLS ({exc.reason or exc}): "
                           "give a PEM certificate chain and its private key") from None


def startup_line(models: Sequence[tuple[str, str]], data_dir: Path, galleries: Sequence[GalleryInfo]) -> str:
    """One line: the models ((name, fingerprint), the default first), the data folder and the galleries
    loaded with their item counts."""
    shown = [f"{g.name} ({g.item_count} item{'' if g.item_count == 1 else 's'})"
             for g in galleries[:SHOWN_GALLERIES]]
    if len(galleries) > SHOWN_GALLERIES:
        shown.append(f"and {len(galleries) - SHOWN_GALLERIES} more")
    count = f"{len(galleries)} galler{'y' if len(galleries) == 1 else 'ies'}"
    listing = f"{count}: {', '.join(shown)}" if galleries else "no galleries yet"
    if len(models) == 1:
        served = f"model {models[0][0]} (fingerprint {models[0][1]})"
    else:
        served = "models " + ", ".join(f"{name} (fingerprint {fp}{', default' if i == 0 else ''})"
                                       for i, (name, fp) in enumerate(models))
    return f"{served}, data folder {Path(data_dir).resolve()}, {listing}"


def model_line(model) -> str:
    """One line per served model: what loading it cost (a `models.ServedModel`)."""
    return (f"model {model.name}: {model.dim}-d, {model.weight_bytes / 2**20:.1f} MiB of weights, "
            f"loaded in {model.load_seconds:.2f} s")
