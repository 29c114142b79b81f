"""What the benchmark sections share: the machine, seeded data, a server subprocess, concurrent callers.

Everything here is measurement plumbing; the figures themselves are computed in the section modules.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinsearch.client.server_process import ServerProcess, ServerStartError

REPO = Path(__file__).resolve().parent.parent
FASHION_DIR = Path(os.environ.get("TWINSEARCH_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
OMNIGLOT_ZIP = REPO / "data" / "omniglot" / "images_background_small2.zip"
HELD_OUT = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


class BenchError(RuntimeError):
    """A benchmark cannot run here (missing data, missing peer, server failed); the message says why."""


# ------------------------------------------------------------------------------------ the machine


def machine() -> dict:
    """Cores, CPU model, RAM, GPU (or none), load average, versions: recorded beside every figure."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            gpu = out.replace("\n", "; ") or "none"
        except (OSError, subprocess.SubprocessError):
            pass
    import faiss
    import torch

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": ram_gib,
        "gpu": gpu,
        "faiss_gpus": faiss.get_num_gpus(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
    }


def percentiles(latencies_s: Sequence[float]) -> dict:
    a = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if not len(a):
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


# ------------------------------------------------------------------------------------ data


@dataclass
class Clustered:
    """A seeded clustered gallery: `n` unit vectors, `n_classes` classes (row i is class i % n_classes)."""

    n: int
    n_classes: int
    dim: int = 128
    spread: float = 0.03  # per-coordinate noise around the class centre, before re-normalising
    seed: int = 0
    _centres: np.ndarray | None = field(default=None, repr=False)

    @property
    def centres(self) -> np.ndarray:
        if self._centres is None:
            c = np.random.default_rng(self.seed).standard_normal((self.n_classes, self.dim), dtype=np.float32)
            self._centres = c / np.linalg.norm(c, axis=1, keepdims=True)
        return self._centres

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows start..stop: (vectors float32 (m, dim), class index int64 (m,)), the same on every call."""
        cls = np.arange(start, stop, dtype=np.int64) % self.n_classes
        rng = np.random.default_rng([self.seed, 1, start])
        x = self.centres[cls] + self.spread * rng.standard_normal((stop - start, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32), cls

    def all(self) -> np.ndarray:
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for s in range(0, self.n, 100_000):
            out[s:min(self.n, s + 100_000)] = self.chunk(s, min(self.n, s + 100_000))[0]
        return out

    def probes(self, count: int, seed: int = 99) -> tuple[np.ndarray, np.ndarray]:
        """New samples (not stored rows) of random classes: (float32 (count, dim), class int64 (count,))."""
        rng = np.random.default_rng([self.seed, 2, seed])
        cls = rng.integers(0, self.n_classes, size=count)
        x = self.centres[cls] + self.spread * rng.standard_normal((count, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32), cls


FASHION_HELP = (
    "Fashion-MNIST is not installed at {dir}. On Debian/Ubuntu: `sudo apt-get install -y dataset-fashion-mnist` "
    "(it installs /usr/share/datasets/fashion-mnist/*.gz); or download the four *-ubyte.gz files from "
    "https://github.com/zalandoresearch/fashion-mnist into a folder and set TWINSEARCH_FASHION_MNIST to it."
)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, ndim = struct.unpack(">HBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (train then test): uint8 (70000, 28, 28) and labels (70000,)."""
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((FASHION_DIR / f).is_file() for f in files):
        raise BenchError(FASHION_HELP.format(dir=FASHION_DIR))
    x = np.concatenate([_read_idx(FASHION_DIR / files[0]), _read_idx(FASHION_DIR / files[2])])
    y = np.concatenate([_read_idx(FASHION_DIR / files[1]), _read_idx(FASHION_DIR / files[3])])
    return x, y.astype(np.int64)


def omniglot_pngs(count: int, seed: int = 0) -> list[bytes]:
    """`count` Omniglot PNG files (bytes) of the held-out alphabets, a seeded sample (repeats if needed)."""
    import zipfile

    if not OMNIGLOT_ZIP.is_file():
        raise BenchError(f"{OMNIGLOT_ZIP} is missing (it ships with the repository)")
    with zipfile.ZipFile(OMNIGLOT_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png") and any(f"/{a}/" in n for a in HELD_OUT))
        pick = np.random.default_rng(seed).choice(len(names), size=count, replace=count > len(names))
        cache = {}
        return [cache.setdefault(i, zf.read(names[i])) for i in pick.tolist()]


# ------------------------------------------------------------------------------------ the model


def model_path(given: str | None) -> Path:
    """The model file to benchmark: the one given, else the default model shipped in the package."""
    from twinsearch.encoder.model import default_model_path

    path = Path(given) if given else default_model_path()
    if not path.is_file():
        raise BenchError(
            f"no model file at {path}. The default model ships inside the package once trained; until then "
            "pass --model FILE (e.g. one made with `twinsearch train ... --out FILE`)."
        )
    return path


# ------------------------------------------------------------------------------------ a server process


def start_server(data_dir: Path, model: Path) -> ServerProcess:
    """`twinsearch serve` over `data_dir` in a subprocess, serving; `startup_s` and `rss_mb()` are figures.

    A 1M gallery may take minutes to open, and as long again to snapshot on SIGTERM."""
    try:
        return ServerProcess.start(data_dir, model, timeout_s=600.0, stop_timeout_s=120.0)
    except ServerStartError as exc:
        raise BenchError(f"the server did not start: {exc}") from None


# ------------------------------------------------------------------------------------ concurrent callers


@dataclass
class LoadResult:
    calls: int
    items: int
    errors: int
    seconds: float
    latencies_s: list[float]
    first_error: str | None = None

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {"calls": self.calls, "items": self.items, "errors": self.errors, "seconds": round(self.seconds, 2),
                "items_per_s": round(self.items_per_s, 1), **percentiles(self.latencies_s),
                **({"first_error": self.first_error} if self.first_error else {})}


def run_concurrent(threads: int, work: Sequence, call: Callable[[object, object], int],
                   make_client: Callable[[], object], warmup: int = 0) -> LoadResult:
    """Hand the items of `work` to `threads` threads (each with its own client from `make_client`);
    `call(client, item)` does one call and returns how many items it handled. Latency per call.
    The first `warmup` items are run (one per thread at most) before the clock starts."""
    clients = [make_client() for _ in range(threads)]
    try:
        for i in range(min(warmup, len(work))):
            call(clients[i % threads], work[i])
        work = list(work[warmup:])
        lock = threading.Lock()
        position = [0]
        latencies: list[list[float]] = [[] for _ in range(threads)]
        counts = [0] * threads
        errors = [0] * threads
        first_error: list[str] = []
        start = threading.Barrier(threads + 1)

        def worker(t: int) -> None:
            start.wait()
            while True:
                with lock:
                    i = position[0]
                    position[0] += 1
                if i >= len(work):
                    return
                t0 = time.perf_counter()
                try:
                    counts[t] += call(clients[t], work[i])
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors[t] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies[t].append(time.perf_counter() - t0)

        pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
        for th in pool:
            th.start()
        start.wait()
        t0 = time.perf_counter()
        for th in pool:
            th.join()
        seconds = time.perf_counter() - t0
    finally:
        for c in clients:
            close = getattr(c, "close", None)
            if close:
                close()
    flat = [x for part in latencies for x in part]
    return LoadResult(calls=len(flat) + sum(errors), items=sum(counts), errors=sum(errors), seconds=seconds,
                      latencies_s=flat, first_error=first_error[0] if first_error else None)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
