"""Domain errors to gRPC status codes: the one place where the mapping lives.

Every error class in `twinsearch.client.errors` names its status (`.code`, the name of a
`grpc.StatusCode`). `status_for` turns any exception into (code, details): a `TwinsearchError` into
its own code, anything else into INTERNAL with a generic message (the traceback goes to the log,
never to the client). The encoder's image errors are converted to domain errors by
`twinsearch.server.inputs`, before they get here. An error that names the request field it concerns
(`.field`) is also sent as a google.rpc.BadRequest field violation (`rich_status`), so that clients
need not parse the message.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

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


def rich_status(exc: BaseException | None, code: grpc.StatusCode, details: str) -> grpc.Status | None:
    """The status with a google.rpc.BadRequest detail naming the field `exc` concerns, for
    `context.abort_with_status`; None when `exc` names no field (a plain status will do)."""
    field = getattr(exc, "field", None) if isinstance(exc, TwinsearchError) else None
    if not field:
        return None
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=details)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=details, details=[detail]))


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str,
          exc: BaseException | None = None) -> None:
    """End the call with `code` and `details`, and the field violation of `exc` when it names a field."""
    rich = rich_status(exc, code, details)
    if rich is not None:
        context.abort_with_status(rich)
    context.abort(code, details)
