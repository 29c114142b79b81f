"""Domain errors to gRPC status codes: the one place where the mapping lives.

Every error class in `twinsearch.client.errors` names its status (`.code`, the name of a
`grpc.StatusCode`). `status_for` turns any exception into (code, details): a `TwinsearchError` into
its own code, anything else into INTERNAL with a generic message (the traceback goes to the log,
never to the client). The encoder's image errors are converted to domain errors by
`twinsearch.server.inputs`, before they get here.
"""

from __future__ import annotations

import logging

import grpc

from twinsearch.client.errors import TwinsearchError

log = logging.getLogger(__name__)

_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}

# gRPC caps what it carries in a status; keep details readable and bounded.
MAX_DETAILS = 2000


def code_for(error: TwinsearchError) -> grpc.StatusCode:
    """The status code an error names; UNKNOWN only for a code name gRPC does not have."""
    return _BY_NAME.get(error.code, grpc.StatusCode.UNKNOWN)


def status_for(exc: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """(code, details) to answer a call that raised `exc`."""
    if isinstance(exc, TwinsearchError):
        details = exc.details if len(exc.details) <= MAX_DETAILS else exc.details[: MAX_DETAILS - 3] + "..."
        return code_for(exc), details
    log.exception("internal error in %s", method or "a call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal server error ({type(exc).__name__}); see the server log"
