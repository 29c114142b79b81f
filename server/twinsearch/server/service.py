"""The gRPC servicer: a thin skin over the engine.

Each method converts its request (`twinsearch.client.convert`), calls the engine, and converts the
answer back. The `_rpc` decorator does the rest for every method, once: the call's deadline and
liveness (`deadlines.call_scope`), metrics, and errors mapped to status codes (`status.status_for`).

`add_to_server` registers the servicer like the generated `add_TwinSearchServicer_to_server`, but with
request deserializers that never fail: gRPC answers a request it cannot parse with INTERNAL, while a
malformed message is the client's fault, so it reaches the handler as `Undecodable` and is answered
INVALID_ARGUMENT.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import grpc

from twinsearch.client import convert as c
from twinsearch.client.errors import InvalidArgument, Unavailable
from twinsearch.client.inputs import in_caller_order
from twinsearch.client.types import EnrollFailure, EnrollResult, ProbeFailure
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .deadlines import Deadline, call_scope
from .engine import DecodedEnroll, Engine, EnrollItem, PendingEnroll
from .metrics import Metrics
from .status import abort, status_for

log = logging.getLogger(__name__)


SERVICE = pb.DESCRIPTOR.services_by_name["TwinSearch"]


@dataclass(frozen=True)
class Undecodable:
    """A request message that did not parse."""

    message: str
    error: str

    def fail(self) -> None:
        raise InvalidArgument(f"the request is not a valid {self.message} message: {self.error}")


def _tolerant(message_cls):
    def deserialize(data: bytes):
        try:
            return message_cls.FromString(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or RuntimeError from some protobuf builds
            return Undecodable(message_cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)

    return deserialize


def add_to_server(servicer: TwinSearchServicer, server: grpc.Server) -> None:
    """Register every method of twinsearch.v1.TwinSearch on `server`."""
    handlers = {}
    for method in SERVICE.methods:
        kw = {"request_deserializer": _tolerant(getattr(pb, method.input_type.name)),
              "response_serializer": getattr(pb, method.output_type.name).SerializeToString}
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **kw)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, **kw)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(behaviour, **kw)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour, **kw)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def _deadline(context: grpc.ServicerContext) -> Deadline:
    return Deadline.after(context.time_remaining(), context.is_active)


def _rpc(items: Callable[[object], int] | None = None):
    """Decorate a unary-unary servicer method: deadline scope, metrics, one error mapping."""

    def wrap(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def handler(self: TwinSearchServicer, request, context: grpc.ServicerContext):
            started = time.perf_counter()
            code, details, answer, error = grpc.StatusCode.OK, "", None, None
            self.metrics.in_flight.labels(name).inc()
            try:
                if isinstance(request, Undecodable):
                    request.fail()
                if items is not None:
                    self.metrics.items.labels(name).inc(items(request))
                if self.closing:
                    raise Unavailable("the server is shutting down; retry on another replica or later")
                with call_scope(_deadline(context)):
                    answer = fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status, never a traceback
                code, details = status_for(exc, name)
                error = exc
            finally:
                self._finished(name, started, code, details, context)
            if code is not grpc.StatusCode.OK:
                abort(context, code, details, error)
            return answer

        return handler

    return wrap


@dataclass(frozen=True)
class _PreparedEnroll:
    """A request's items decoded (`pending` a `DecodedEnroll`) or decoded and embedded (a
    `PendingEnroll`), with the conversion's own failures by request position (skip_invalid) and where
    each item handed to the engine came from."""

    pending: DecodedEnroll | PendingEnroll
    positions: tuple[int, ...]
    failed: tuple[EnrollFailure, ...]
    sequence: int


class _Ahead:
    """Runs the requests of a stream through `stages`, each stage on a thread of its own and one item
    ahead of the next, in order: with stages (decode, embed), while the caller stores batch k, batch
    k + 1 is embedded and batch k + 2 decoded.

    Iterating yields each request passed through every stage, or raises what a stage (or reading the
    requests) raised, after which the stream ends: nothing after a failing batch goes further, so
    nothing after it is stored. The threads run in the stream's context (its deadline) and stop at
    `close`."""

    _END = object()

    def __init__(self, requests: Iterator, *stages: Callable):
        self._stop = threading.Event()
        self._threads = []
        source: Iterator = requests
        for i, stage in enumerate(stages):
            out: queue.Queue = queue.Queue(maxsize=1)
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(self._run, source, stage, out), daemon=True,
                                      name=f"twinsearch-enroll-ahead-{i}")
            thread.start()
            self._threads.append(thread)
            source = self._drain(out)
        self._results = source

    def _run(self, source: Iterator, stage: Callable, out: queue.Queue) -> None:
        try:
            for item in source:
                if self._stop.is_set():
                    return
                try:
                    self._put(out, (stage(item), None))
                except Exception as exc:  # noqa: BLE001 - handed on, in order
                    self._put(out, (None, exc))
                    return
        except Exception as exc:  # noqa: BLE001 - reading failed (a cancelled call, or an earlier stage)
            self._put(out, (None, exc))
            return
        self._put(out, self._END)

    def _put(self, out: queue.Queue, item) -> None:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain(self, out: queue.Queue) -> Iterator:
        while True:
            try:
                item = out.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():  # closed: the stage before may have stopped without a word
                    return
                continue
            if item is self._END:
                return
            value, exc = item
            if exc is not None:
                raise exc
            yield value

    def __iter__(self):
        return self._results

    def close(self) -> None:
        self._stop.set()


class TwinSearchServicer(twinsearch_pb2_grpc.TwinSearchServicer):
    def __init__(self, engine: Engine, metrics: Metrics | None = None):
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.closing = False

    def _count(self, n: int, what: str) -> None:
        """Refuse an oversized batch before converting it, by the engine's own rule."""
        self.engine.limits.check_count(n, what)

    # ------------------------------------------------------------------ facts, embed, verify
    @_rpc()
    def Info(self, request: pb.InfoRequest, context) -> pb.InfoResponse:
        return c.server_info_to_pb(self.engine.info())

    @_rpc(items=lambda r: len(r.images))
    def Embed(self, request: pb.EmbedRequest, context) -> pb.EmbedResponse:
        self._count(len(request.images), "images")
        images = [c.image_from_pb(image, f"images[{i}]") for i, image in enumerate(request.images)]
        vectors = self.engine.embed(images, model=request.model or None)
        return pb.EmbedResponse(vectors=[c.vector_to_pb(v) for v in vectors],
                                model_fingerprint=self.engine.model_info(request.model or None).fingerprint)

    @_rpc(items=lambda r: len(r.pairs))
    def Verify(self, request: pb.VerifyRequest, context) -> pb.VerifyResponse:
        self._count(len(request.pairs), "pairs")
        pairs = [(c.input_from_pb(p.a, f"pairs[{i}].a"), c.input_from_pb(p.b, f"pairs[{i}].b"))
                 for i, p in enumerate(request.pairs)]
        threshold, target_far = c.threshold_options_from_pb(request.threshold)
        results = self.engine.verify(pairs, threshold=threshold, target_far=target_far, model=request.model or None)
        return pb.VerifyResponse(results=[c.verification_to_pb(r) for r in results])

    # ------------------------------------------------------------------ galleries
    @_rpc()
    def CreateGallery(self, request: pb.CreateGalleryRequest, context) -> pb.Gallery:
        info = self.engine.create_gallery(
            request.name,
            index=c.index_spec_from_pb(request.index, request.params),
            scoring=c.scoring_from_pb(request.scoring),
            mean_k=request.mean_k or None,
            threshold=request.threshold if request.HasField("threshold") else None,
            model=request.model or None,
            keep_images=request.keep_images if request.HasField("keep_images") else None,
            cohort_threshold=request.cohort_threshold if request.HasField("cohort_threshold") else None,
        )
        return c.gallery_to_pb(info)

    @_rpc()
    def UpdateGallery(self, request: pb.UpdateGalleryRequest, context) -> pb.Gallery:
        return c.gallery_to_pb(self.engine.update_gallery(request.name, **c.gallery_update_from_pb(request)))

    @_rpc()
    def GetGallery(self, request: pb.GetGalleryRequest, context) -> pb.Gallery:
        return c.gallery_to_pb(self.engine.get_gallery(request.name))

    @_rpc()
    def ListGalleries(self, request: pb.ListGalleriesRequest, context) -> pb.ListGalleriesResponse:
        page = self.engine.gallery_page(page_size=request.page_size or None, page_token=request.page_token)
        return c.gallery_page_to_pb(page)

    @_rpc()
    def DeleteGallery(self, request: pb.DeleteGalleryRequest, context) -> pb.DeleteGalleryResponse:
        return pb.DeleteGalleryResponse(items_deleted=self.engine.delete_gallery(request.name))

    @_rpc()
    def MigrateGallery(self, request: pb.MigrateGalleryRequest, context) -> pb.MigrateGalleryResponse:
        return c.migration_start_to_pb(self.engine.migrate_gallery(request.name, request.model or None))

    @_rpc()
    def CancelMigration(self, request: pb.CancelMigrationRequest, context) -> pb.Gallery:
        return c.gallery_to_pb(self.engine.cancel_migration(request.name))

    def _finished(self, name: str, started: float, code: grpc.StatusCode, details: str,
                  context: grpc.ServicerContext) -> None:
        """Metrics and the debug access-log line of one finished call."""
        elapsed = time.perf_counter() - started
        self.metrics.in_flight.labels(name).dec()
        self.metrics.rpcs.labels(name, code.name).inc()
        self.metrics.latency.labels(name).observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):  # the peer and details are built only for the line
            log.debug("rpc=%s code=%s ms=%.1f peer=%s%s", name, code.name, elapsed * 1000, context.peer(),
                      f" details={details!r}" if details else "")

    # ------------------------------------------------------------------ enroll, delete, classes
    @_rpc(items=lambda r: len(r.items))
    def Enroll(self, request: pb.EnrollRequest, context) -> pb.EnrollResponse:
        return self._enroll(request)

    def EnrollStream(self, request_iterator: Iterator[pb.EnrollRequest], context) -> Iterator[pb.EnrollResponse]:
        """One acknowledgement per committed batch, in order; the first failing batch ends the stream
        with its status (the batches acknowledged before it stay committed, none after it is stored).

        The batches are pipelined: while one is being stored (SQLite, kept images, the index), the next
        is embedded and the one after it decoded, each on a thread of the stream's own (`_Ahead`), so that
        the encoder waits neither for the decoding nor for the store. Storing stays in order, one batch
        at a time."""
        name = "EnrollStream"
        started = time.perf_counter()
        code, details, error = grpc.StatusCode.OK, "", None
        self.metrics.in_flight.labels(name).inc()
        ahead = None
        try:
            if self.closing:
                raise Unavailable("the server is shutting down; retry on another replica or later")
            with call_scope(_deadline(context)):
                ahead = _Ahead(request_iterator, self._stream_decode, self._enroll_embed)
                for prepared in ahead:
                    yield self._enroll_commit(prepared)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            code, details = status_for(exc, name)
            error = exc
        finally:
            if ahead is not None:
                ahead.close()
            self._finished(name, started, code, details, context)
        if code is not grpc.StatusCode.OK:
            abort(context, code, details, error)

    def _stream_decode(self, request) -> _PreparedEnroll:
        if isinstance(request, Undecodable):
            request.fail()
        self.metrics.items.labels("EnrollStream").inc(len(request.items))
        return self._enroll_decode(request)

    def _enroll(self, request: pb.EnrollRequest) -> pb.EnrollResponse:
        return self._enroll_commit(self._enroll_embed(self._enroll_decode(request)))

    def _enroll_decode(self, request: pb.EnrollRequest) -> _PreparedEnroll:
        """Converts, checks and decodes a request's items: the first of its three stages."""
        self._count(len(request.items), "items")
        items: list[EnrollItem] = []
        positions: list[int] = []  # request position of each item handed to the engine
        failed: list[EnrollFailure] = []
        for i, item in enumerate(request.items):
            try:
                payload = c.input_from_pb(item.input, f"items[{i}]")
            except InvalidArgument as exc:
                if not request.skip_invalid:
                    raise
                failed.append(EnrollFailure(index=i, client_id=item.client_id or None, reason=exc.details))
                continue
            items.append(EnrollItem(label=item.label, payload=payload, client_id=item.client_id or None,
                                    metadata=c.metadata_from_pb(item.metadata)))
            positions.append(i)
        decoded = self.engine.decode_enroll(request.gallery, items, skip_invalid=request.skip_invalid)
        return _PreparedEnroll(decoded, tuple(positions), tuple(failed), request.sequence)

    def _enroll_embed(self, prepared: _PreparedEnroll) -> _PreparedEnroll:
        """The forward pass of a decoded request: the second of its three stages."""
        return replace(prepared, pending=self.engine.embed_enroll(prepared.pending))

    def _enroll_commit(self, prepared: _PreparedEnroll) -> pb.EnrollResponse:
        result = self.engine.commit_enroll(prepared.pending)
        failed, positions = prepared.failed, prepared.positions
        if failed:
            # The engine numbered its failures within the items it was given: back to request positions.
            engine_failed = [EnrollFailure(index=positions[f.index], client_id=f.client_id,
                                           reason=f.reason.replace(f"items[{f.index}]", f"items[{positions[f.index]}]", 1))
                             for f in result.failed]
            result = EnrollResult(stored=result.stored,
                                  failed=tuple(sorted(failed + tuple(engine_failed), key=lambda f: f.index)))
        return c.enroll_result_to_pb(result, sequence=prepared.sequence)

    @_rpc(items=lambda r: len(r.client_ids))
    def FindItems(self, request: pb.FindItemsRequest, context) -> pb.FindItemsResponse:
        found = self.engine.find_items(request.gallery, list(request.client_ids))
        return pb.FindItemsResponse(items=[c.enrolled_to_pb(item) for item in found])

    @_rpc(items=lambda r: len(r.ids) + len(r.client_ids))
    def Delete(self, request: pb.DeleteRequest, context) -> pb.DeleteResponse:
        deleted = self.engine.delete(request.gallery, ids=list(request.ids), client_ids=list(request.client_ids),
                                     label=request.label or None)
        return pb.DeleteResponse(deleted=deleted)

    @_rpc()
    def ListClasses(self, request: pb.ListClassesRequest, context) -> pb.ListClassesResponse:
        page = self.engine.list_classes(request.gallery, page_size=request.page_size or None,
                                        page_token=request.page_token)
        return c.class_page_to_pb(page)

    # ------------------------------------------------------------------ queries
    @_rpc(items=lambda r: len(r.probes))
    def Identify(self, request: pb.IdentifyRequest, context) -> pb.IdentifyResponse:
        self._count(len(request.probes), "probes")
        probes, positions = [], []  # the probes handed to the engine and their request positions
        failures: dict[int, ProbeFailure] = {}
        for i, p in enumerate(request.probes):
            try:
                probes.append(c.input_from_pb(p, f"probes[{i}]"))
                positions.append(i)
            except InvalidArgument as exc:
                if not request.skip_invalid:
                    raise
                failures[i] = ProbeFailure(index=i, reason=exc.details)
        threshold, target_far = c.threshold_options_from_pb(request.threshold)
        results = self.engine.identify(
            request.gallery, probes, k=request.k or None, scoring=c.scoring_from_pb(request.scoring),
            mean_k=request.mean_k or None, threshold=threshold, target_far=target_far,
            labels=list(request.labels) or None, skip_invalid=request.skip_invalid,
            names=[f"probes[{i}]" for i in positions],
        )
        # The engine named its failures by request position already (`names`); place them there.
        return c.identify_response_to_pb(in_caller_order(len(request.probes), failures, positions, results))

    @_rpc(items=lambda r: len(r.queries))
    def VerifyClass(self, request: pb.VerifyClassRequest, context) -> pb.VerifyResponse:
        self._count(len(request.queries), "queries")
        queries = [(c.input_from_pb(q.probe, f"queries[{i}].probe"), q.label)
                   for i, q in enumerate(request.queries)]
        threshold, target_far = c.threshold_options_from_pb(request.threshold)
        results = self.engine.verify_class(
            request.gallery, queries, scoring=c.scoring_from_pb(request.scoring), mean_k=request.mean_k or None,
            threshold=threshold, target_far=target_far, cohort=request.cohort,
        )
        return pb.VerifyResponse(results=[c.verification_to_pb(r) for r in results])

    @_rpc(items=lambda r: len(r.probes))
    def Search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        self._count(len(request.probes), "probes")
        probes = [c.input_from_pb(p, f"probes[{i}]") for i, p in enumerate(request.probes)]
        results = self.engine.search(request.gallery, probes, k=request.k or None,
                                     labels=list(request.labels) or None)
        return c.neighbors_to_pb(results)
