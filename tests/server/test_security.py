"""Health and reflection; the bearer token (health exempt); TLS with a certificate made at test time."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from twinsearch.server.app import SERVICE_NAME, start_server
from twinsearch.v1 import twinsearch_pb2 as pb
from twinsearch.v1 import twinsearch_pb2_grpc

from .conftest import TIMEOUT, glyph, png, settings_for

TOKEN = "s3cret-token"


def test_health_reports_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert SERVICE_NAME in services and "grpc.health.v1.Health" in services
    described = db.FindFileContainingSymbol(SERVICE_NAME)
    methods = {m.name for s in described.service if s.name == "TwinSearch" for m in s.method}
    assert {"Identify", "EnrollStream", "VerifyClass", "Search"} <= methods


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, model_path):
    running = start_server(settings_for(tmp_path_factory.mktemp("token-data"), model_path, token=TOKEN))
    yield running
    running.stop(grace=1.0)


def test_token_is_required_except_for_health(token_server):
    with grpc.insecure_channel(token_server.address) as ch:
        stub = twinsearch_pb2_grpc.TwinSearchStub(ch)
        for metadata, why in ((None, "needs a token"), ((("authorization", "Bearer wrong"),), "wrong token"),
                              ((("authorization", f"Basic {TOKEN}"),), "Bearer"),
                              ((("authorization", "Bearer " + TOKEN + "x"),), "wrong token")):
            with pytest.raises(grpc.RpcError) as info:
                stub.Info(pb.InfoRequest(), metadata=metadata, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert why in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.EnrollStream(iter([pb.EnrollRequest(gallery="g")]), timeout=TIMEOUT))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Info(pb.InfoRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=TIMEOUT)
        assert ok.api_version == "v1"
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_with_token(tmp_path, model_path, certificate):
    cert, key = certificate
    running = start_server(settings_for(tmp_path, model_path, token=TOKEN, tls_cert=cert, tls_key=key))
    try:
        address = f"localhost:{running.port}"
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()),
            grpc.access_token_call_credentials(TOKEN))
        with grpc.secure_channel(address, credentials) as ch:
            stub = twinsearch_pb2_grpc.TwinSearchStub(ch)
            answer = stub.Embed(pb.EmbedRequest(images=[pb.Image(encoded=png(glyph(1)))]), timeout=TIMEOUT)
            assert len(answer.vectors) == 1
        with grpc.insecure_channel(address) as plain:  # plaintext to a TLS port does not get through
            with pytest.raises(grpc.RpcError) as info:
                twinsearch_pb2_grpc.TwinSearchStub(plain).Info(pb.InfoRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace=1.0)
