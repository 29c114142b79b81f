"""The API's input limits and defaults, each in one place.

`Limits` caps what a request may hold; `Defaults` fills what a request leaves out (a zero on the
wire, None in Python). The engine builds one `Limits` from its settings (`Limits.from_settings`) and
parses every request against it (`queries.py`); the validation helpers and the store read the same
objects. The proto's comments state these numbers to callers, and a test compares them
(`tests/foundation/test_rules.py`), so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinsearch.client.errors import ResourceExhausted

from .settings import DEFAULT_MAX_BATCH, DEFAULT_MAX_K, EngineSettings


@dataclass(frozen=True)
class Limits:
    """The most a request may ask for. `max_k` and `max_batch` come from the server's settings
    (`--max-k`, `--max-batch`); the others are fixed by the API."""

    max_k: int = DEFAULT_MAX_K              # k of Identify and Search, and mean_k
    max_batch: int = DEFAULT_MAX_BATCH      # items (images, pairs, probes, enroll items, ids) per call
    gallery_name_length: int = 64           # characters of [A-Za-z0-9._-], the first a letter or digit
    label_length: int = 256                 # characters of a class label
    client_id_length: int = 256             # characters of a client id
    metadata_bytes: int = 64 * 1024         # UTF-8 bytes of one item's metadata keys and values together
    page_size: int = 10_000                 # entries of one ListClasses or ListGalleries page
    max_distance: float = 2.0               # the largest Euclidean distance between unit vectors
    max_dim: int = 65_536                   # embedding dimension of a gallery

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Limits:
        return cls(max_k=int(settings.max_k), max_batch=int(settings.max_batch))

    def check_count(self, n: int, what: str) -> None:
        """ResourceExhausted when a call holds more than `max_batch` of `what`."""
        if n > self.max_batch:
            raise ResourceExhausted(f"{n} {what} in one call, at most {self.max_batch}")


@dataclass(frozen=True)
class Defaults:
    """What a request that leaves a field out gets."""

    identify_k: int = 5      # classes ranked per probe
    search_k: int = 10       # items per probe
    page_size: int = 100     # entries per ListClasses page
    mean_k: int = 3          # a new gallery's k for mean-of-k scoring


LIMITS = Limits()
DEFAULTS = Defaults()
