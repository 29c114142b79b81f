"""Bearer-token check for every RPC but the health service.

The client sends `authorization: Bearer <token>` metadata; the token is compared in constant time
(`hmac.compare_digest`). A missing or wrong token ends the call with UNAUTHENTICATED before any
handler runs.
"""

from __future__ import annotations

import hmac
import logging

import grpc

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = token.encode("utf-8")

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(EXEMPT_PREFIXES):
            return continuation(handler_call_details)
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: let gRPC answer UNIMPLEMENTED
        log.info("refused %s: %s", method, problem)
        return _refusal(handler, problem)

    def _problem(self, metadata) -> str | None:
        values = [v for k, v in metadata if k.lower() == "authorization"]
        if not values:
            return "this server needs a token: send 'authorization: Bearer <token>' metadata"
        value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return "the authorization metadata must be 'Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode("utf-8"), self._expected):
            return "wrong token"
        return None


def _refusal(handler: grpc.RpcMethodHandler, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""

    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)

    def abort_stream(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
        yield  # pragma: no cover - makes this a generator, as a streaming handler must be

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)
