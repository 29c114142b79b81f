"""`Client`: the twinsearch API over gRPC.

Every call carries a deadline (the client's `timeout`, in seconds) and waits, within it, for the
channel to be ready (gRPC's `wait_for_ready`): a call made while the server is still starting is
sent once it listens. A call still waiting for a connection at its deadline raises Unavailable (no
server reachable), not DeadlineExceeded, which is kept for a server too slow to answer. A call that
fails with UNAVAILABLE after it was sent (server restarting or shutting down) is retried by gRPC
itself, by the retry policy of the channel's service config (exponential backoff with jitter, at
most 4 retries, within the deadline); no other status is retried. An Enroll whose items do not all
carry client ids is not retried, because re-sending it could store the items twice: it goes over a
second channel without retries, opened when first needed. Statuses become the
exceptions of `twinsearch.client.errors` (NotFound, InvalidArgument, ...), carrying `code` and
`details`; results are the dataclasses of `twinsearch.client.types` and numpy arrays.

The enroll stream of bulk indexing is `twinsearch.client.enroll_stream.EnrollStream`: its deadline
applies to each acknowledgement, and after UNAVAILABLE it reconnects and re-sends what was not
acknowledged.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Iterator

import grpc
import numpy as np
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from twinsearch.client import convert as c
from twinsearch.client import types as t
from twinsearch.client.base import BaseClient
from twinsearch.client.enroll_stream import EnrollStream, enroll_request
from twinsearch.client.errors import FailedPrecondition, TwinsearchError, Unavailable, error_for_code
from twinsearch.client.types import MAX_TIMEOUT_S, EnrollItem, Payload
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "localhost:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVICE = "twinsearch.v1.TwinSearch"
MAX_ATTEMPTS = 5  # gRPC's own ceiling on a retry policy's maxAttempts (larger values are lowered to it)


def service_config(retries: int, backoff: float, max_backoff: float) -> str | None:
    """The channel's service config: every unary call retried on UNAVAILABLE (`retries` times at most,
    up to gRPC's ceiling of MAX_ATTEMPTS attempts in all; the first wait about `backoff` seconds,
    doubling up to `max_backoff`, with gRPC's jitter), within the call's deadline. None for no retries.

    EnrollStream is left out (a stream whose acknowledgements have begun cannot be re-sent by gRPC;
    `EnrollStream` reconnects and re-sends itself), and so is nothing else: an Enroll that must not be
    retried goes over a channel without this config."""
    attempts = min(int(retries) + 1, MAX_ATTEMPTS)
    if attempts < 2:
        return None
    policy = {
        "maxAttempts": attempts,
        "initialBackoff": f"{max(backoff, 0.001):.3f}s",
        "maxBackoff": f"{max(max_backoff, backoff, 0.001):.3f}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": policy}]})


def error_from_rpc(exc: grpc.RpcError) -> TwinsearchError:
    """The library's exception for a failed gRPC call (status name and details preserved; `field`: the
    request field of the status's google.rpc.BadRequest field violation, when it carries one)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return error_for_code(name, details, field=_violated_field(exc))


def _violated_field(exc: grpc.RpcError) -> str | None:
    """The field named by the first BadRequest field violation among the status's details, if any."""
    if not hasattr(exc, "trailing_metadata"):
        return None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:  # a status whose details disagree with its code or message: ignore them
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                return bad.field_violations[0].field
    return None


def _close_channels(channels: list[grpc.Channel]) -> None:
    for channel in channels:
        channel.close()


class Client(BaseClient):
    """The twinsearch API over gRPC.

    `address`: "host:port". `token`: sent as "authorization: Bearer <token>" metadata when the
    server requires one. `timeout`: the deadline of each call in seconds (retries included).
    `tls`: use a TLS channel, verified against `root_certificates` (PEM bytes; None = the system's).
    `retries`: attempts after the first on UNAVAILABLE (at most 4: gRPC's ceiling), `backoff`: the
    first wait in seconds (doubling up to `max_backoff`); `EnrollStream` reconnects as often as
    `retries` says.
    Use as a context manager, or call `close()`. Thread-safe: one Client (one channel) may serve many
    threads at once, and the server gathers their concurrent calls into shared batches.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        retries: int = 4,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be > 0 and at most {MAX_TIMEOUT_S:.0e} seconds, got {timeout}")
        self.address = address
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_request_bytes = int(max_message_bytes)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # gRPC's own reconnect backoff (1 s growing to 120 s) would fail our retries fast with
            # UNAVAILABLE long after a restarted server is back: keep it within our own backoff's range.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(max(max_backoff, 0.1) * 1000)),
        ]
        self._credentials = None
        if tls or root_certificates is not None:
            self._credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        self._options = options
        config = service_config(retries, backoff, max_backoff)
        retrying = options + ([("grpc.service_config", config)] if config else []) + [
            ("grpc.enable_retries", 1 if config else 0)]
        self._channel = self._open_channel(retrying)
        self._stub = twinsearch_pb2_grpc.TwinSearchStub(self._channel)
        self._once_lock = threading.Lock()
        self._once_channel: grpc.Channel | None = None  # without retries: see `_once_stub`
        self._once: twinsearch_pb2_grpc.TwinSearchStub | None = None
        # The channels close when this client is collected, or at the latest when the program exits: a
        # channel still open at interpreter shutdown, after a connectivity watch (`_unreachable`), keeps
        # the process from ending.
        self._channels = [self._channel]
        self._closer = weakref.finalize(self, _close_channels, self._channels)
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({self.address!r}, timeout={self.timeout})"

    def _open_channel(self, options) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(self.address, self._credentials, options=options)
        return grpc.insecure_channel(self.address, options=options)

    def _once_stub(self) -> twinsearch_pb2_grpc.TwinSearchStub:
        """A stub on a channel that never retries, for calls that must be sent at most once."""
        with self._once_lock:
            self._check_open()
            if self._once is None:
                self._once_channel = self._open_channel(self._options + [("grpc.enable_retries", 0)])
                self._channels.append(self._once_channel)
                self._once = twinsearch_pb2_grpc.TwinSearchStub(self._once_channel)
            return self._once

    def close(self) -> None:
        with self._once_lock:
            self._closed = True
            self._closer()

    def _check_open(self) -> None:
        """FailedPrecondition once `close()` was called (as from a closed LocalClient), rather than gRPC's
        ValueError, and before a call could open a channel of its own again; not Unavailable, which callers
        retry."""
        if self._closed:
            raise FailedPrecondition(f"{self!r} is closed: open a new one")

    # ------------------------------------------------------------------------------- plumbing

    def _sleep_before_retry(self, attempt: int, deadline: float) -> bool:
        """Wait before reconnect number `attempt` (0-based) of an EnrollStream; False when no retry is
        left or time is up."""
        if attempt >= self.retries:
            return False
        delay = min(self.backoff * (2 ** attempt), self.max_backoff) * (0.5 + random.random() / 2)
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True

    def _call(self, method: str, request, *, retry: bool = True):
        """Call `method` within the client's deadline; UNAVAILABLE answers are retried by the channel's
        retry policy (`service_config`), unless `retry` is False: then it is sent at most once."""
        self._check_open()
        stub = self._stub if retry else self._once_stub()
        rpc = getattr(stub, method)
        try:
            # wait_for_ready: the call waits for a connection (within its deadline) instead of
            # failing at once while the server is starting.
            return rpc(request, timeout=self.timeout, metadata=self._metadata, wait_for_ready=True)
        except grpc.RpcError as exc:
            channel = self._channel if retry else self._once_channel
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self._unreachable(channel):
                raise Unavailable(f"no server reachable at {self.address} within the deadline "
                                  f"({self.timeout:g} s)") from None
            raise error_from_rpc(exc) from None

    def _unreachable(self, channel: grpc.Channel) -> bool:
        """Whether the channel's last connection attempt failed (nothing listens at the address, or
        the handshake failed), waiting up to 0.2 s for an attempt in progress to end."""
        states: list[grpc.ChannelConnectivity] = []
        settled = threading.Event()
        pending = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)

        def watch(state: grpc.ChannelConnectivity) -> None:
            states.append(state)
            if state not in pending:
                settled.set()

        channel.subscribe(watch, try_to_connect=False)
        try:
            settled.wait(0.2)
        finally:
            channel.unsubscribe(watch)
        return bool(states) and states[-1] in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                                               grpc.ChannelConnectivity.SHUTDOWN)

    # ----------------------------------------------------------------------------- primitives

    def _info(self) -> t.ServerInfo:
        return c.server_info_from_pb(self._call("Info", pb.InfoRequest()))

    def _embed(self, images: list[Payload], *, model) -> np.ndarray:
        response = self._call("Embed", pb.EmbedRequest(images=[c.image_to_pb(x) for x in images], model=model or ""))
        vectors = [c.vector_from_pb(v, f"vectors[{i}]") for i, v in enumerate(response.vectors)]
        return c.vectors_to_matrix(vectors)

    def _verify(self, pairs, *, threshold, target_far, model) -> list[t.Verification]:
        request = pb.VerifyRequest(
            pairs=[pb.Pair(a=c.input_to_pb(a), b=c.input_to_pb(b)) for a, b in pairs],
            threshold=c.threshold_options_to_pb(threshold, target_far), model=model or "",
        )
        return [c.verification_from_pb(v) for v in self._call("Verify", request).results]

    def _create_gallery(self, name, *, index, scoring, mean_k, threshold, model, keep_images,
                        cohort_threshold) -> t.GalleryInfo:
        kind, params = c.index_spec_to_pb(index)
        request = pb.CreateGalleryRequest(name=name, index=kind, params=params, scoring=c.scoring_to_pb(scoring),
                                          mean_k=mean_k or 0, model=model or "")
        if threshold is not None:
            request.threshold = threshold
        if keep_images is not None:
            request.keep_images = bool(keep_images)
        if cohort_threshold is not None:
            request.cohort_threshold = cohort_threshold
        return c.gallery_from_pb(self._call("CreateGallery", request))

    def _migrate_gallery(self, name, model) -> t.MigrationStart:
        request = pb.MigrateGalleryRequest(name=name, model=model or "")
        return c.migration_start_from_pb(self._call("MigrateGallery", request))

    def _cancel_migration(self, name) -> t.GalleryInfo:
        return c.gallery_from_pb(self._call("CancelMigration", pb.CancelMigrationRequest(name=name)))

    def _update_gallery(self, name, *, threshold, cohort_threshold, scoring, mean_k) -> t.GalleryInfo:
        request = c.gallery_update_to_pb(name, threshold=threshold, cohort_threshold=cohort_threshold,
                                         scoring=scoring, mean_k=mean_k)
        return c.gallery_from_pb(self._call("UpdateGallery", request))

    def _get_gallery(self, name) -> t.GalleryInfo:
        return c.gallery_from_pb(self._call("GetGallery", pb.GetGalleryRequest(name=name)))

    def _list_galleries(self) -> list[t.GalleryInfo]:
        return [c.gallery_from_pb(g) for g in self._call("ListGalleries", pb.ListGalleriesRequest()).galleries]

    def _gallery_page(self, *, page_size, page_token) -> t.GalleryPage:
        request = pb.ListGalleriesRequest(page_size=page_size or 0, page_token=page_token)
        return c.gallery_page_from_pb(self._call("ListGalleries", request))

    def _delete_gallery(self, name) -> int:
        return int(self._call("DeleteGallery", pb.DeleteGalleryRequest(name=name)).items_deleted)

    def _enroll(self, gallery, items, *, skip_invalid) -> t.EnrollResult:
        request = enroll_request(gallery, items, skip_invalid=skip_invalid)
        idempotent = all(item.client_id for item in items)
        return c.enroll_result_from_pb(self._call("Enroll", request, retry=idempotent))

    def _enroll_batches(self, gallery, batches, *, max_in_flight) -> Iterator[tuple[list[EnrollItem], t.EnrollResult]]:
        self._check_open()
        stream = EnrollStream(
            gallery, batches, max_in_flight=max_in_flight, ack_timeout=self.timeout,
            open_call=lambda requests: self._stub.EnrollStream(requests, metadata=self._metadata),
            retry_wait=self._sleep_before_retry, to_error=error_from_rpc,
        )
        return stream.run()

    def _find_items(self, gallery, client_ids) -> list[t.Enrolled]:
        response = self._call("FindItems", pb.FindItemsRequest(gallery=gallery, client_ids=client_ids))
        return [c.enrolled_from_pb(item) for item in response.items]

    def _delete(self, gallery, *, ids, client_ids, label) -> int:
        request = pb.DeleteRequest(gallery=gallery, ids=ids, client_ids=client_ids, label=label or "")
        return int(self._call("Delete", request).deleted)

    def _list_classes(self, gallery, *, page_size, page_token) -> t.ClassPage:
        request = pb.ListClassesRequest(gallery=gallery, page_size=page_size or 0, page_token=page_token)
        return c.class_page_from_pb(self._call("ListClasses", request))

    def _identify(self, gallery, probes, *, k, scoring, mean_k, threshold, target_far, labels, skip_invalid):
        request = pb.IdentifyRequest(
            gallery=gallery, probes=[c.input_to_pb(p) for p in probes], k=k or 0, scoring=c.scoring_to_pb(scoring),
            mean_k=mean_k or 0, threshold=c.threshold_options_to_pb(threshold, target_far), labels=labels or [],
            skip_invalid=skip_invalid,
        )
        return c.identify_response_from_pb(self._call("Identify", request))

    def _verify_class(self, gallery, queries, *, scoring, mean_k, threshold, target_far, cohort):
        request = pb.VerifyClassRequest(
            gallery=gallery, queries=[pb.ClassQuery(probe=c.input_to_pb(p), label=label) for p, label in queries],
            scoring=c.scoring_to_pb(scoring), mean_k=mean_k or 0,
            threshold=c.threshold_options_to_pb(threshold, target_far), cohort=cohort,
        )
        return [c.verification_from_pb(v) for v in self._call("VerifyClass", request).results]

    def _search(self, gallery, probes, *, k, labels):
        request = pb.SearchRequest(gallery=gallery, probes=[c.input_to_pb(p) for p in probes], k=k or 0,
                                   labels=labels or [])
        return c.neighbors_from_pb(self._call("Search", request))
