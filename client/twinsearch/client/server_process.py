"""`twinsearch serve` as a subprocess on a free port of 127.0.0.1: for the demo, the benchmarks and the
reliability tests, which start, stop, SIGKILL and restart servers over the same data folder.

The port is chosen by the server itself (`--address 127.0.0.1:0`) and read from the line it prints
once it is up ("twinsearch serving on HOST:PORT"), so there is no race for a port. A thread drains the
server's stdout, so it never blocks on a full pipe. Its stderr (the log) is appended to a file, by
default `<data_dir>-serve.log` beside the data folder, so a restart over the same folder adds to the same
log; `tail()` shows its last lines when something goes wrong.

Only the standard library: the client package imports neither torch nor faiss, and the server runs in
its own interpreter (`python -m twinsearch.client.cli serve`, as in production).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

READY_PREFIX = "twinsearch serving on "


class ServerStartError(RuntimeError):
    """The server exited, or did not come up in time; the message ends with the tail of its log."""


class ServerProcess:
    """`twinsearch serve` over `data_dir` on a free port of 127.0.0.1, in a subprocess.

    The constructor spawns the process and returns at once; `wait_ready` waits for the "serving on" line
    (`ServerProcess.start` does both). Then `address` is "127.0.0.1:PORT" and `startup_s` the seconds
    from spawning the interpreter to that line: imports, model load, store open and port bind.

    data_dir: the server's data folder. model: its model file (None: the default model).
    flags: more `twinsearch serve` flags (e.g. "--torch-threads", "1").
    env: variables laid over this process's environment. keep_settings: False drops this process's
    TWINSEARCH_* variables, so that only `flags` and `env` configure the server.
    log_path: where its stderr is appended (default: `<data_dir>-serve.log` beside `data_dir`).
    stop_timeout_s: how long `stop()` waits for a graceful exit before SIGKILL.
    """

    def __init__(self, data_dir: Path, model: Path | None = None, *, flags: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, keep_settings: bool = True, log_path: Path | None = None,
                 stop_timeout_s: float = 60.0):
        data_dir = Path(data_dir)
        command = [sys.executable, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(data_dir),
                   "--address", "127.0.0.1:0"]
        if model is not None:
            command += ["--model", str(model)]
        command += list(flags)
        base = {k: v for k, v in os.environ.items() if keep_settings or not k.startswith("TWINSEARCH_")}
        # Unbuffered, so that the log of a server killed with SIGKILL holds all it wrote.
        full_env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.data_dir = data_dir
        self.log_path = Path(log_path) if log_path is not None else data_dir.parent / f"{data_dir.name}-serve.log"
        self.stop_timeout_s = stop_timeout_s
        self.address: str | None = None
        self.startup_s: float | None = None
        self._ready = threading.Event()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop() and kill()
        self._started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, env=full_env)
        threading.Thread(target=self._read_stdout, daemon=True).start()

    @classmethod
    def start(cls, data_dir: Path, model: Path | None = None, *, timeout_s: float = 120.0,
              **options) -> ServerProcess:
        """Spawn the server and wait until it serves (see `wait_ready`); `options` as the constructor's."""
        server = cls(data_dir, model, **options)
        server.wait_ready(timeout_s)
        return server

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            if self.address is None and line.startswith(READY_PREFIX):
                self.startup_s = time.perf_counter() - self._started
                self.address = line[len(READY_PREFIX):]
                self._ready.set()
        self._ready.set()  # stdout closed: the server has exited

    def wait_ready(self, timeout_s: float) -> str:
        """Wait up to `timeout_s` seconds for the server to serve; returns its address "127.0.0.1:PORT".

        Raises ServerStartError (with the tail of the log) if it exits first or is not up in time; a
        server still starting then is killed."""
        if self._ready.wait(timeout_s) and self.address is not None:
            return self.address
        exited = self._ready.is_set()
        self.kill()
        if exited:
            raise ServerStartError(f"`twinsearch serve` exited with status {self.process.returncode}; "
                                   f"its log:\n{self.tail()}")
        raise ServerStartError(f"`twinsearch serve` did not come up within {timeout_s:g} s; its log:\n{self.tail()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """The server's resident set size in MiB (Linux: read from /proc)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.process.pid}: the server has exited")

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the log, indented."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"  {line}" for line in text[-lines:])

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then wait for the graceful exit (SIGKILL after `timeout_s`, default `stop_timeout_s`);
        returns the exit status, which is 0 after a graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs (no snapshot, no SQLite close); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
