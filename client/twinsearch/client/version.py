"""The installed twinsearch version, for `twinsearch --version` and the server's Info answer."""

from __future__ import annotations


def package_version() -> str:
    """The version of the installed `twinsearch` distribution, or "0.0.0+unknown" when run from a
    checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("twinsearch")
    except PackageNotFoundError:
        return "0.0.0+unknown"
