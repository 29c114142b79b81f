"""One error hierarchy for the whole project.

The gallery core and the encoder's callers raise these; the gRPC server maps each to its status code
in one place (`code` is the name of a `grpc.StatusCode`); the remote client turns a status back into
the same class; the local client raises them directly. So a caller catches the same exception
whichever way it talks to twinsearch.

    InvalidArgument     bad input: undecodable image, wrong shape, NaN vector, empty label, bad k
    NotFound            unknown gallery, label or item
    AlreadyExists       a gallery of that name exists; a stored client id sent with another image
    FailedPrecondition  empty gallery, a gallery bound to another model or dimension
    ResourceExhausted   too many items, a message or an image over a limit
    Unauthenticated     missing or wrong token
    Unavailable         server not reachable or shutting down (the only one the client retries)
    DeadlineExceeded    the call ran past its deadline
    Cancelled           the caller cancelled the call
    InternalError       a fault of the server, never of the input
"""

from __future__ import annotations


class TwinsearchError(Exception):
    """Base class. `code` names the gRPC status; `details` is the human-readable reason; `field`, when
    known, the request field that was wrong ("k", "items[3].label"), so that a caller need not parse
    `details` (over gRPC it travels as a google.rpc.BadRequest field violation)."""

    code = "UNKNOWN"

    def __init__(self, details: str, *, field: str | None = None):
        super().__init__(details)
        self.details = details
        self.field = field

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class InvalidArgument(TwinsearchError, ValueError):
    code = "INVALID_ARGUMENT"


class NotFound(TwinsearchError, LookupError):
    code = "NOT_FOUND"


class AlreadyExists(TwinsearchError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(TwinsearchError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(TwinsearchError):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(TwinsearchError):
    code = "UNAUTHENTICATED"


class Unavailable(TwinsearchError):
    code = "UNAVAILABLE"


class DeadlineExceeded(TwinsearchError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(TwinsearchError):
    code = "CANCELLED"


class InternalError(TwinsearchError):
    code = "INTERNAL"


ERRORS_BY_CODE: dict[str, type[TwinsearchError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ResourceExhausted,
        Unauthenticated, Unavailable, DeadlineExceeded, Cancelled, InternalError,
    )
}


def error_for_code(code: str, details: str, field: str | None = None) -> TwinsearchError:
    """The exception for a gRPC status name (e.g. "NOT_FOUND"); TwinsearchError for others."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        err = TwinsearchError(details, field=field)
        err.code = code
        return err
    return cls(details, field=field)
