"""Retries of idempotent calls come from gRPC's retry policy in the channel's service config: a
retried attempt carries gRPC's `grpc-previous-rpc-attempts` header, which no hand-written loop sends;
an Enroll without client ids is sent once."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from twinsearch.client import Client, Unavailable
from twinsearch.client.remote import MAX_ATTEMPTS
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc


class Flaky(twinsearch_pb2_grpc.TwinSearchServicer):
    """Answers UNAVAILABLE to the first `failures` calls of each method, then answers; records the
    previous-attempts header of each call."""

    def __init__(self, failures: int):
        self.failures = failures
        self.seen: dict[str, list[str | None]] = {}
        self.lock = threading.Lock()

    def _attempt(self, name: str, context) -> None:
        header = dict(context.invocation_metadata()).get("grpc-previous-rpc-attempts")
        with self.lock:
            calls = self.seen.setdefault(name, [])
            calls.append(header)
            n = len(calls)
        if n <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def Info(self, request, context):
        self._attempt("Info", context)
        return pb.InfoResponse(api_version="v1")

    def Enroll(self, request, context):
        self._attempt("Enroll", context)
        return pb.EnrollResponse(items=[pb.EnrolledItem(id=i + 1, client_id=it.client_id, label=it.label,
                                                        created=True) for i, it in enumerate(request.items)])


@pytest.fixture
def flaky():
    def start(failures: int):
        servicer = Flaky(failures)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        twinsearch_pb2_grpc.add_TwinSearchServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append(server)
        return servicer, f"127.0.0.1:{port}"

    started: list[grpc.Server] = []
    yield start
    for server in started:
        server.stop(0)


def test_unavailable_is_retried_by_the_channel_s_retry_policy(flaky):
    servicer, address = flaky(2)
    with Client(address, timeout=10.0, retries=4, backoff=0.01) as client:
        assert client.info().api_version == "v1"
    assert servicer.seen["Info"] == [None, "1", "2"]


def test_retries_stop_at_the_policy_s_attempts(flaky):
    servicer, address = flaky(100)
    with Client(address, timeout=10.0, retries=2, backoff=0.01) as client, pytest.raises(Unavailable):
        client.info()
    assert len(servicer.seen["Info"]) == 3
    with Client(address, timeout=10.0, retries=50, backoff=0.01) as client, pytest.raises(Unavailable):
        client.info()
    assert len(servicer.seen["Info"]) == 3 + MAX_ATTEMPTS


def test_an_enroll_without_client_ids_is_sent_once(flaky):
    servicer, address = flaky(1)
    vector = [1.0, 0.0, 0.0, 0.0]
    with Client(address, timeout=10.0, retries=4, backoff=0.01) as client:
        with pytest.raises(Unavailable):
            client._enroll("g", [_item(vector, None)], skip_invalid=False)
        assert servicer.seen["Enroll"] == [None]
        result = client._enroll("g", [_item(vector, "a")], skip_invalid=False)  # idempotent: retried
        assert [e.client_id for e in result.stored] == ["a"]
    assert servicer.seen["Enroll"] == [None, None]  # its first attempt answered


def test_an_enroll_with_client_ids_is_retried(flaky):
    servicer, address = flaky(1)
    with Client(address, timeout=10.0, retries=4, backoff=0.01) as client:
        result = client._enroll("g", [_item([1.0, 0.0], "a")], skip_invalid=False)
    assert [e.client_id for e in result.stored] == ["a"] and servicer.seen["Enroll"] == [None, "1"]


def _item(vector, client_id):
    import numpy as np

    from twinsearch.client.types import EnrollItem

    return EnrollItem(label="x", payload=np.asarray(vector, dtype=np.float32), client_id=client_id)
