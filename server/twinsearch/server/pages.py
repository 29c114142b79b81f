"""Pagination over a sorted listing (classes by label, galleries by name), one way for every listing.

A page token names the last key of the page before it (URL-safe base64 of its UTF-8), so a listing
that changes between pages neither repeats nor skips a key that stays in it. Keys are never empty.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence

from twinsearch.client.errors import InvalidArgument


def after_key(token: str) -> str:
    """The key a page token names ("" for the empty token: the first page); InvalidArgument for a token
    this server did not give."""
    if not token:
        return ""
    try:
        # validate=True: the lenient default drops characters outside the alphabet, so a
        # garbled token would silently restart at the first page.
        after = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidArgument(f"page token {token!r} is not one this server gave", field="page_token") from exc
    if not after:  # tokens name the last key of a page, and keys are never empty
        raise InvalidArgument(f"page token {token!r} is not one this server gave", field="page_token")
    return after


def page_of(keys: Sequence[str], size: int, after: str) -> tuple[list[str], str]:
    """(the up to `size` sorted `keys` after `after`, the token of the next page or "" on the last)."""
    start = bisect.bisect_right(keys, after) if after else 0
    page = list(keys[start:start + size])
    token = ""
    if start + size < len(keys):
        token = base64.urlsafe_b64encode(page[-1].encode("utf-8")).decode("ascii")
    return page, token
