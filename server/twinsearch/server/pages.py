"""Pagination over a sorted listing (classes by label, galleries by name), one way for every listing.

A page token names the listing it pages and the last key of the page before it (URL-safe base64 of
the UTF-8 of "<listing>\n<key>"), so a listing that changes between pages neither repeats nor skips a
key that stays in it, and a token given to another listing (another gallery's classes, or the
galleries) is refused rather than read as a place in it. Keys are never empty; listing names hold no
newline.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence

from twinsearch.client.errors import InvalidArgument

GALLERIES = "galleries"


def classes_of(gallery: str) -> str:
    """The listing name of a gallery's classes."""
    return f"classes of {gallery}"


def after_key(token: str, listing: str) -> str:
    """The key a page token of `listing` names ("" for the empty token: the first page); InvalidArgument
    for a token this server did not give, or gave for another listing."""
    if not token:
        return ""
    foreign = InvalidArgument(f"page token {token!r} is not one this server gave", field="page_token")
    try:
        # validate=True: the lenient default drops characters outside the alphabet, so a
        # garbled token would silently restart at the first page.
        text = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise foreign from exc
    named, sep, after = text.partition("\n")
    if not sep or not after:  # tokens name a listing and the last key of a page, and keys are never empty
        raise foreign
    if named != listing:
        raise InvalidArgument(f"page token {token!r} pages the {named}, not the {listing}: start from the "
                              "first page (an empty token)", field="page_token")
    return after


def page_of(keys: Sequence[str], size: int, after: str, listing: str) -> tuple[list[str], str]:
    """(the up to `size` sorted `keys` after `after`, the token of the next page of `listing` or "" on
    the last)."""
    start = bisect.bisect_right(keys, after) if after else 0
    page = list(keys[start:start + size])
    token = ""
    if start + size < len(keys):
        token = base64.urlsafe_b64encode(f"{listing}\n{page[-1]}".encode()).decode("ascii")
    return page, token
