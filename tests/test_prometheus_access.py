"""make verify's Prometheus client reaches one behind auth: it sends a bearer token on every API call, trusts a
Prometheus' TLS certificate signed by a CA bundle it is given (and not one it is not given), or checks no certificate
when told to; and says which URL refused it and how. Against a loopback server of this test's own that answers as
Prometheus' API does."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oomtools import alert_client as prom

TOKEN = "a-test-token"  # noqa: S105 (the loopback test server's own)
ANSWERS = {
    "/api/v1/status/buildinfo": {"version": "2.42.0"},
    "/api/v1/rules": {"groups": [{"name": "oom-killer", "rules": [{"name": name} for name in prom.DEFAULT_ALERTS]}]},
    "/api/v1/alerts": {
        "alerts": [
            {"state": "firing", "labels": {"alertname": "ContainerOOMKilled", "namespace": "oom-killer", "pod": "p"}}
        ]
    },
    "/api/v1/query": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "3"]}]},
}


class _Prometheus(BaseHTTPRequestHandler):
    """Prometheus' API behind a bearer token: 401 without it, as an auth proxy in front of Prometheus answers."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401, "Unauthorized")
            self.end_headers()
            return
        body = json.dumps({"status": "success", "data": ANSWERS[path]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(context: ssl.SSLContext | None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A CA-less certificate for 127.0.0.1 (its own issuer) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prometheus.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "prometheus.crt", directory / "prometheus.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def plain() -> Iterator[str]:
    yield from serve(None)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    for url in serve(context):
        yield url, cert_file


def test_without_its_token_a_prometheus_behind_auth_is_said_to_refuse_naming_the_url(plain: str) -> None:
    with pytest.raises(prom.PrometheusUnreachable, match=rf"^{plain}/api/v1/status/buildinfo: HTTP 401 Unauthorized$"):
        prom.check_reachable(plain)


def test_the_bearer_token_goes_with_every_call_verify_makes(plain: str) -> None:
    access = prom.Access(bearer_token=TOKEN)
    assert prom.check_reachable(plain, access) == "2.42.0"
    assert prom.rule_names(plain, access) == set(prom.DEFAULT_ALERTS)
    assert prom.firing(plain, ("ContainerOOMKilled",), "oom-killer", access)["ContainerOOMKilled"]
    assert prom.query(plain, "count(container_oom_events_total)", access)[0]["value"][1] == "3"


def test_a_certificate_no_trusted_ca_signed_is_refused(tls: tuple[str, Path]) -> None:
    url, _ = tls
    with pytest.raises(prom.PrometheusUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        prom.check_reachable(url, prom.Access(bearer_token=TOKEN))


def test_a_certificate_signed_by_the_given_ca_bundle_is_trusted(tls: tuple[str, Path]) -> None:
    url, ca_file = tls
    assert prom.check_reachable(url, prom.Access(bearer_token=TOKEN, ca_file=ca_file)) == "2.42.0"


def test_with_no_certificate_check_any_certificate_does(tls: tuple[str, Path]) -> None:
    url, _ = tls
    assert prom.check_reachable(url, prom.Access(bearer_token=TOKEN, insecure_skip_verify=True)) == "2.42.0"
