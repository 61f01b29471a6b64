"""GREENIT_KAFKA_SECURITY_PROTOCOL=PLAINTEXT (bench.sasl's arm without SASL): clients connect
without a password only when asked, and the bench's plaintext broker differs from `./dev`'s in
its security settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.credentials import (
    PLAINTEXT,
    KafkaCredentials,
    MissingCredential,
    security_protocol,
    tool_credentials,
)
from shared.settings import ServiceSettings
from tools.localinfra import kafka_properties


class IntakeSettings(ServiceSettings):
    service = "intake"


@pytest.fixture
def empty_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GREENIT_SECRETS_DIR", str(tmp_path))
    for name in (
        "GREENIT_KAFKA_SECURITY_PROTOCOL",
        "GREENIT_KAFKA_PASSWORD",
        "GREENIT_KAFKA_USERNAME",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_sasl_is_the_default_and_a_missing_password_stays_an_error(empty_secrets):
    assert security_protocol() == "SASL_PLAINTEXT"
    with pytest.raises(MissingCredential, match="GREENIT_KAFKA_PASSWORD"):
        KafkaCredentials.of("intake")
    with pytest.raises(MissingCredential, match="kafka-intake"):
        IntakeSettings().kafka_credentials()
    (empty_secrets / "kafka-admin").write_text("s3cret\n")
    auth = tool_credentials().aiokafka()
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "admin"
    assert auth["sasl_plain_password"] == "s3cret"


def test_plaintext_needs_no_password_anywhere(empty_secrets, monkeypatch):
    monkeypatch.setenv("GREENIT_KAFKA_SECURITY_PROTOCOL", PLAINTEXT)
    monkeypatch.setenv("GREENIT_KAFKA_PASSWORD", "ignored")
    for creds in (
        KafkaCredentials.of("intake"),
        IntakeSettings().kafka_credentials(),
        tool_credentials(),
    ):
        assert creds.aiokafka() == {"security_protocol": PLAINTEXT}
        assert creds.faststream() is None
        assert "ignored" not in repr(creds)
    properties = tool_credentials().properties_file().read_text()
    assert properties == "security.protocol=PLAINTEXT\n"
    assert not list(empty_secrets.glob("kafka-*"))  # no password was read or made


def test_an_unknown_protocol_is_refused_naming_the_setting(empty_secrets, monkeypatch):
    monkeypatch.setenv("GREENIT_KAFKA_SECURITY_PROTOCOL", "SSL")
    with pytest.raises(ValueError, match="GREENIT_KAFKA_SECURITY_PROTOCOL=SSL"):
        KafkaCredentials.of("admin")
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        IntakeSettings()


def _settings(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_plaintext_broker_differs_from_devs_only_in_security(empty_secrets, tmp_path):
    (empty_secrets / "kafka-broker").write_text("brokerpw\n")
    secured = _settings(kafka_properties(19092, 19093, tmp_path / "data"))
    plain_text = kafka_properties(19092, 19093, tmp_path / "data", sasl=False)
    plain = _settings(plain_text)
    assert "brokerpw" not in plain_text
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert plain["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert plain["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any(k.startswith(("sasl.", "listener.name.", "authorizer.")) for k in plain)
    security = {
        "listeners", "advertised.listeners", "listener.security.protocol.map",
        "inter.broker.listener.name", "allow.everyone.if.no.acl.found", "super.users",
        "authorizer.class.name",
    }  # fmt: skip
    same = {k: v for k, v in secured.items() if k not in security and not k.startswith("sasl.")}
    same = {k: v for k, v in same.items() if not k.startswith("listener.name.")}
    assert same == {k: v for k, v in plain.items() if k not in security}
    assert secured["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert secured["authorizer.class.name"].endswith("StandardAuthorizer")
