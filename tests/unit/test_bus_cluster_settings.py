"""The bus settings a JetStream cluster with TLS needs (k8s/): ``NATS_STREAM_REPLICAS`` and
``NATS_TLS_CA``."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from glyphoxa_bus.connection import BusSettings
from glyphoxa_bus.streams import heartbeat_bucket_config, stream_configs

pytestmark = pytest.mark.unit


def test_streams_have_one_copy_unless_told(monkeypatch):
    monkeypatch.delenv("NATS_STREAM_REPLICAS", raising=False)
    settings = BusSettings()
    assert settings.stream_settings().replicas == 1
    assert {c.num_replicas for c in stream_configs(settings.stream_settings())} == {1}


def test_stream_replicas_from_the_environment(monkeypatch):
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    settings = BusSettings()
    configs = stream_configs(settings.stream_settings())
    assert len(configs) == 4 and {c.num_replicas for c in configs} == {3}
    assert settings.stream_settings().max_age_s == settings.stream_max_age_s
    assert heartbeat_bucket_config(6.0, settings.stream_replicas).replicas == 3
    assert heartbeat_bucket_config(6.0).replicas == 1


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_stream_replicas_out_of_range_are_refused(monkeypatch, value):
    monkeypatch.setenv("NATS_STREAM_REPLICAS", value)
    with pytest.raises(ValidationError):
        BusSettings()


def _ca_pem(path: Path, name: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_no_ca_leaves_tls_to_the_system_trust_store(monkeypatch):
    monkeypatch.delenv("NATS_TLS_CA", raising=False)
    assert BusSettings().tls_context() is None


def test_tls_ca_is_the_only_trusted_ca_and_host_names_are_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("NATS_TLS_CA", str(_ca_pem(tmp_path / "ca.crt", "glyphoxa test CA")))
    context = BusSettings().tls_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    trusted = context.get_ca_certs()
    assert [dict(field[0] for field in c["subject"])["commonName"] for c in trusted] == [
        "glyphoxa test CA"]


def test_a_missing_tls_ca_fails_at_start_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NATS_TLS_CA", str(tmp_path / "absent.crt"))
    with pytest.raises(ValidationError, match="NATS_TLS_CA"):
        BusSettings()
