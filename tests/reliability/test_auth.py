"""Auth: with a token set, every RPC but health refuses a missing or wrong token; TLS works end to end.

One `twinsearch serve` subprocess with `--token` and `--tls-cert/--tls-key` (a self-signed certificate
made with openssl at test time). Every method of the TwinSearch service, found in the service
descriptor so that a new RPC cannot be forgotten, is called without a token, with a wrong one, with
another scheme and with an empty one: each answer is UNAUTHENTICATED. Health answers without a token.
With the right token, the client library works end to end over TLS (create, enroll, bulk stream,
identify, verify, search, delete) and so does the command line (`twinsearch index`, `identify`); a
plaintext channel and a TLS channel that does not trust the certificate get nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twinsearch.client import Client, Unauthenticated
from twinsearch.v1 import twinsearch_pb2 as pb

from .conftest import glyph_png, unit_vectors

TOKEN = "reliability-token-7f3a"
SERVICE = pb.DESCRIPTOR.services_by_name["TwinSearch"]
TIMEOUT = 30.0


def call(channel: grpc.Channel, method, metadata):
    """Call one TwinSearch method with an empty request; returns the status code."""
    from google.protobuf import message_factory

    path = f"/{SERVICE.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    kw = {"request_serializer": request_class.SerializeToString, "response_deserializer": response_class.FromString}
    try:
        if method.client_streaming:
            list(channel.stream_stream(path, **kw)(iter([request_class()]), timeout=TIMEOUT, metadata=metadata))
        else:
            channel.unary_unary(path, **kw)(request_class(), timeout=TIMEOUT, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
def test_token_and_tls_end_to_end(serve, certificate):
    cert, key = certificate
    server = serve("data", "--token", TOKEN, "--tls-cert", str(cert), "--tls-key", str(key))
    port = server.address.rsplit(":", 1)[1]
    address = f"localhost:{port}"
    roots = cert.read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)

    with grpc.secure_channel(address, credentials) as channel:
        refused = 0
        for method in SERVICE.methods:
            for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", f"Basic {TOKEN}"),),
                             (("authorization", "Bearer "),), (("authorization", f"Bearer {TOKEN[:-1]}"),),
                             (("authorization", f"Bearer {TOKEN}x"),), (("x-token", TOKEN),)):
                assert call(channel, method, metadata) == grpc.StatusCode.UNAUTHENTICATED, (method.name, metadata)
                refused += 1
            # With the token the call gets through to the service (whatever it then says of an empty request).
            code = call(channel, method, (("authorization", f"Bearer {TOKEN}"),))
            assert code != grpc.StatusCode.UNAUTHENTICATED, method.name
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Reflection is an RPC like the others: it needs the token too.
        reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as info:
            list(reflect(iter([b"\x3a\x00"]), timeout=TIMEOUT))  # list_services
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        refused += 1

    # The client library, end to end over TLS with the token.
    with Client(address, token=TOKEN, tls=True, root_certificates=roots, timeout=TIMEOUT) as c:
        assert c.info().api_version == "v1"
        c.create_gallery("secure")
        result = c.enroll("secure", ["a", "b"], [glyph_png(1), glyph_png(2)], ids=["1", "2"])
        assert [x.created for x in result.stored] == [True, True]
        stream = list(c._enroll_batches("secure", iter([[_item(i)] for i in range(3, 8)]), max_in_flight=2))
        assert len(stream) == 5
        assert c.identify("secure", glyph_png(1), k=2).candidates[0].label == "a"
        assert c.verify(glyph_png(1), glyph_png(1)).same
        assert len(c.search("secure", unit_vectors(1, 9)[0], k=3)) == 3
        assert c.delete("secure", label="b") == 1
        assert c.get_gallery("secure").item_count == 6
    with Client(address, token="not-it", tls=True, root_certificates=roots, timeout=TIMEOUT) as c, \
            pytest.raises(Unauthenticated):
        c.info()

    # The command line, over TLS with the token from the environment: bulk indexing and a query.
    tree = cert.parent / "tree"
    for i in range(6):
        (tree / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        (tree / f"class{i % 2}" / f"{i}.png").write_bytes(glyph_png(10 + i))
    env = {**os.environ, "TWINSEARCH_TOKEN": TOKEN, "TWINSEARCH_ADDRESS": address}
    cli = [sys.executable, "-m", "twinsearch.client.cli"]
    done = subprocess.run([*cli, "index", str(tree), "--gallery", "cli", "--create", "--ca", str(cert), "--json",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 6
    done = subprocess.run([*cli, "identify", str(tree / "class1" / "1.png"), "--gallery", "cli", "--ca", str(cert),
                           "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "class1" in done.stdout, done.stderr
    done = subprocess.run([*cli, "info", "--ca", str(cert), "--token", "wrong"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "wrong token" in done.stderr + done.stdout

    # Plaintext to a TLS port, and TLS without trusting the certificate: no answer at all.
    with grpc.insecure_channel(address) as plain:
        assert call(plain, SERVICE.methods_by_name["Info"], (("authorization", f"Bearer {TOKEN}"),)) \
            == grpc.StatusCode.UNAVAILABLE
    other = grpc.ssl_channel_credentials(root_certificates=_other_certificate(cert.parent))
    with grpc.secure_channel(address, other) as untrusted:
        assert call(untrusted, SERVICE.methods_by_name["Info"], (("authorization", f"Bearer {TOKEN}"),)) \
            == grpc.StatusCode.UNAVAILABLE
    print(f"\nauth: {len(SERVICE.methods)} RPCs, {refused} calls without the right token all UNAUTHENTICATED; "
          "health open; TLS end to end with the client library and the command line")


def _item(i: int):
    from twinsearch.client.types import EnrollItem

    return EnrollItem(label="c", payload=unit_vectors(1, i)[0].astype(np.float32), client_id=f"s{i}")


def _other_certificate(folder) -> bytes:
    cert, key = folder / "other.pem", folder / "other-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return cert.read_bytes()
