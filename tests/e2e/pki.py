"""The test cluster's certificates: one CA, a serving certificate per server, a client certificate per component.

Kubernetes authenticates a client certificate's subject as the user (CN) in its groups (O): the admin is in
system:masters, the kubelet is system:node:<name> in system:nodes (which the Node authorizer and NodeRestriction
expect), the controller manager and the scheduler are the users the default RBAC roles are bound to.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
VALID_FOR = datetime.timedelta(days=2)


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, key: Key, *, ca: bool) -> x509.CertificateBuilder:
    """A certificate for `key`, valid from a few minutes ago (clock skew between the components) for VALID_FOR."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )


def _write(directory: Path, stem: str, key: Key, certificate: x509.Certificate) -> None:
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / f"{stem}.key").chmod(0o600)
    (directory / f"{stem}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class Authority:
    """A CA that signs the cluster's certificates; written as <stem>.crt and <stem>.key (ca.crt, ca.key) in
    `directory`. The front proxy's is a second one, as kubeadm makes it: the API server trusts a request's
    X-Remote-User headers only from a client that CA signed."""

    def __init__(self, directory: Path, stem: str = "ca", common_name: str = "oom-killer-e2e-ca") -> None:
        self.directory = directory
        self.key = _key()
        self.name = _name(common_name)
        self.certificate = (
            _builder(self.name, self.name, self.key, ca=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write(directory, stem, self.key, self.certificate)

    def issue(
        self,
        stem: str,
        common_name: str,
        organization: str | None = None,
        *,
        server_names: tuple[str, ...] = (),
    ) -> None:
        """Write <stem>.crt and <stem>.key: a client certificate, and a serving one too where names are given."""
        key = _key()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = _builder(_name(common_name, organization), self.name, key, ca=False)
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            alternatives: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alternatives.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        certificate = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
            self.key, hashes.SHA256()
        )
        _write(self.directory, stem, key, certificate)


def service_account_key(directory: Path) -> None:
    """sa.key and sa.pub: the key the API server signs service account tokens with, and checks them by."""
    key = _key()
    (directory / "sa.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "sa.key").chmod(0o600)
    (directory / "sa.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
