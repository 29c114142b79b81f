"""Fixtures shared by every test folder."""

from __future__ import annotations

import subprocess

import pytest


def make_certificate(folder):
    """(cert, key) paths in `folder` of a new self-signed certificate for localhost and 127.0.0.1, made with
    openssl.

    Skips the test where openssl is missing or cannot make one: TLS needs a certificate, and the
    project ships no private key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return cert, key


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """(cert, key) of a self-signed certificate for localhost (`make_certificate`)."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def other_certificate(tmp_path_factory):
    """Another certificate and key, whose key is not `certificate`'s."""
    return make_certificate(tmp_path_factory.mktemp("tls-other"))
