"""`twinsearch serve` as a subprocess on a free port of 127.0.0.1, for the demo.

The port is chosen by the server itself (`--address 127.0.0.1:0`) and read from the line it prints
once it is up ("twinsearch serving on HOST:PORT"), so there is no race for a port. Its log goes to a
file whose tail is shown when something goes wrong. `stop()` sends SIGTERM and returns the exit
status, which is 0 after a graceful shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


class ServerProcess:
    """`twinsearch serve` as a subprocess on a free port of 127.0.0.1 over a temporary data folder."""

    def __init__(self, data_dir: Path, model: Path | None, log_path: Path):
        command = [sys.executable, "-m", "twinsearch.client.cli", "serve", "--data-dir", str(data_dir),
                   "--address", "127.0.0.1:0"]
        if model is not None:
            command += ["--model", str(model)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSEARCH_")}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.address: str | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            self._lines.append(line)
            if line.startswith("twinsearch serving on "):
                self.address = line.rsplit(" ", 1)[-1]
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> str:
        if self._ready.wait(timeout) and self.address is not None:
            return self.address
        status = self.process.poll()
        if status is None:
            self.process.kill()
            raise RuntimeError(f"`twinsearch serve` did not come up within {timeout:.0f} s; its log:\n{self.tail()}")
        raise RuntimeError(f"`twinsearch serve` exited with status {status}; its log:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"  {line}" for line in text[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a clean exit (SIGKILL after `timeout`); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
