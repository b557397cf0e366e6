"""Unit tests for broker URLs, credentials and precedence (pure logic, no broker)."""

from __future__ import annotations

import pytest

from tesaiot_cli.config import (
    CLOUD_URL,
    Secret,
    check_token_topics,
    mask_token,
    parse_broker_url,
    parse_mqtt_version,
    resolve_connection,
)
from tesaiot_cli.errors import ConfigError

TOKEN = "tesa_mqtt_acme-iot_Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4OTA"


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path", "tls", "transport"),
    [
        ("mqtt://broker.local", "mqtt", "broker.local", 1883, "", False, "tcp"),
        ("mqtts://broker.local", "mqtts", "broker.local", 8883, "", True, "tcp"),
        ("ws://broker.local", "ws", "broker.local", 8083, "/mqtt", False, "websockets"),
        ("wss://mqtt.tesaiot.com", "wss", "mqtt.tesaiot.com", 8085, "/mqtt", True, "websockets"),
        ("wss://h:8084/ws/mqtt", "wss", "h", 8084, "/ws/mqtt", True, "websockets"),
        ("ws://h:8083/", "ws", "h", 8083, "/mqtt", False, "websockets"),
        ("localhost", "mqtt", "localhost", 1883, "", False, "tcp"),
        ("127.0.0.1:1884", "mqtt", "127.0.0.1", 1884, "", False, "tcp"),
        ("tcp://h:1", "mqtt", "h", 1, "", False, "tcp"),
        ("ssl://h", "mqtts", "h", 8883, "", True, "tcp"),
        ("mqtt://[::1]:1883", "mqtt", "::1", 1883, "", False, "tcp"),
        ("MQTTS://H:8884", "mqtts", "h", 8884, "", True, "tcp"),
    ],
)
def test_parse_broker_url(url: str, scheme: str, host: str, port: int, path: str, tls: bool,
                          transport: str) -> None:
    parsed = parse_broker_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path) == (scheme, host, port, path)
    assert parsed.tls is tls
    assert parsed.transport == transport


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://h", "unknown scheme 'ftp'"),
        ("http://h", "unknown scheme"),
        ("mqtt://h:0", "out of range"),
        ("mqtt://h:70000", "out of range"),
        ("mqtt://h:abc", "not a number"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h/some/path", "a path only goes with ws"),
    ],
)
def test_bad_broker_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_broker_url(url)


def test_url_credentials_are_masked_in_display_and_errors() -> None:
    parsed = parse_broker_url("mqtt://bob:hunter2-secret@h:1883")
    assert parsed.username == "bob"
    assert parsed.password is not None and parsed.password.reveal() == "hunter2-secret"
    assert "hunter2" not in parsed.display()
    assert "hunter2" not in repr(parsed)
    with pytest.raises(ConfigError) as info:
        parse_broker_url("ftp://bob:hunter2-secret@h")
    assert "hunter2" not in str(info.value)


def test_secret_never_shows_itself() -> None:
    secret = Secret(TOKEN)
    for text in (str(secret), repr(secret), f"{secret}", secret.masked()):
        assert TOKEN not in text
    assert secret.masked() == TOKEN[:20] + "..." + TOKEN[-4:]
    assert str(Secret("password123")) == "****"


def test_mask_token_short_values_reveal_little() -> None:
    assert mask_token("tesa_mqtt_x") == "te..."
    assert mask_token("a" * 40) == "a" * 20 + "..." + "a" * 4


def test_precedence_flag_over_env() -> None:
    env = {"MQTT_BROKER_URL": "mqtt://from-env:1884", "MQTT_CLIENT_ID": "env-id"}
    settings = resolve_connection({"broker": "mqtt://from-flag:1885"}, env, client_prefix="tesaiot-t")
    assert settings.url.host == "from-flag" and settings.url.port == 1885
    assert settings.client_id == "env-id"
    settings = resolve_connection({}, env, client_prefix="tesaiot-t")
    assert settings.url.host == "from-env"


def test_simulator_env_names_host_port_tls() -> None:
    env = {"MQTT_BROKER_HOST": "edge.local", "MQTT_BROKER_PORT": "8884", "MQTT_USE_TLS": "true",
           "MQTT_USERNAME": "dev1", "MQTT_PASSWORD": "pw", "MQTT_CA_CERT": "/etc/ca.pem"}
    settings = resolve_connection({}, env, client_prefix="tesaiot-sim")
    assert settings.url.scheme == "mqtts" and settings.url.host == "edge.local" and settings.url.port == 8884
    assert settings.username == "dev1" and settings.password is not None
    assert settings.ca_file == "/etc/ca.pem"


def test_host_flag_overrides_url_host() -> None:
    settings = resolve_connection({"broker": "wss://a.example:8084/mqtt", "host": "b.example"}, {},
                                  client_prefix="x")
    assert settings.url.display() == "wss://b.example:8084/mqtt"


def test_token_defaults_to_cloud_and_is_username_and_password() -> None:
    settings = resolve_connection({}, {"MQTT_API_TOKEN": TOKEN}, client_prefix="tesaiot-listen")
    assert settings.url.display() == CLOUD_URL.replace("com:8085", "com:8085")
    assert settings.token is not None and settings.token.reveal() == TOKEN
    assert settings.username is None and settings.password is None
    assert TOKEN not in settings.describe() and TOKEN not in repr(settings)


def test_token_form_checked_for_every_broker() -> None:
    """16.11: the token was checked only for the cloud host, and 'tesa_mqtt_' alone passed."""
    with pytest.raises(ConfigError, match="start with 'tesa_mqtt_'"):
        resolve_connection({"token": "not-a-token-abc"}, {}, client_prefix="x")
    with pytest.raises(ConfigError, match="start with 'tesa_mqtt_'"):
        resolve_connection({"token": "anything", "broker": "mqtt://127.0.0.1"}, {}, client_prefix="x")
    for short in ("tesa_mqtt_", "tesa_mqtt_org", "tesa_mqtt_org_", "tesa_mqtt__x"):
        with pytest.raises(ConfigError, match="cut short"):
            resolve_connection({"token": short, "broker": "mqtt://127.0.0.1"}, {}, client_prefix="x")
    settings = resolve_connection({"token": "tesa_mqtt_org_R4nd0m", "broker": "mqtt://127.0.0.1"}, {},
                                  client_prefix="x")
    assert settings.token is not None


@pytest.mark.parametrize("quoted", ['"{t}"', "'{t}'", '{t}"', "\"{t}"])
def test_a_quoted_token_is_named_and_the_quote_shown(quoted: str) -> None:
    token = "tesa_mqtt_test-org-1_" + "Q" * 30
    with pytest.raises(ConfigError, match="wrapped in quotes") as caught:
        resolve_connection({"token": quoted.format(t=token)}, {}, client_prefix="x")
    assert token not in str(caught.value)
    assert "'" in str(caught.value) or '"' in str(caught.value).split(":")[0]


def test_tls_options_on_a_plain_url_are_refused_and_env_ones_named() -> None:
    """16.2: --ca-file/--cert-file/--key-file/--insecure on mqtt:// were ignored without a word."""
    for flag in ("ca_file", "cert_file", "key_file", "insecure"):
        with pytest.raises(ConfigError, match="needs TLS"):
            resolve_connection({flag: True if flag == "insecure" else "x.pem", "broker": "mqtt://h"}, {},
                               client_prefix="x")
    settings = resolve_connection({"ca_file": "ca.pem", "tls": True, "host": "h"}, {}, client_prefix="x")
    assert settings.url.scheme == "mqtts" and settings.ca_file == "ca.pem"  # --tls turns it on
    settings = resolve_connection({"broker": "mqtt://h"}, {"CA_CERT_PATH": "ca.pem"}, client_prefix="x")
    assert settings.ca_file is None and any("CA_CERT_PATH" in text for text in settings.unused)


def test_password_without_username() -> None:
    with pytest.raises(ConfigError, match="--password needs --username"):
        resolve_connection({"password": "pw"}, {}, client_prefix="x")
    settings = resolve_connection({}, {"MQTT_PASSWORD": "pw"}, client_prefix="x")
    assert settings.password is None and any("MQTT_PASSWORD" in text for text in settings.unused)
    assert "pw" not in " ".join(settings.unused)


def test_token_is_case_sensitive_and_never_split() -> None:
    with pytest.raises(ConfigError):
        resolve_connection({"token": "TESA_MQTT_" + "x" * 40}, {}, client_prefix="x")
    odd = "tesa_mqtt_my-org_with_more_segments_" + "z" * 20
    settings = resolve_connection({"token": odd}, {}, client_prefix="x")
    assert settings.token is not None and settings.token.reveal() == odd


def test_cloud_without_credentials_is_an_error() -> None:
    with pytest.raises(ConfigError, match="needs credentials"):
        resolve_connection({"broker": CLOUD_URL}, {}, client_prefix="x")


def test_token_and_username_flags_conflict() -> None:
    with pytest.raises(ConfigError, match="not both"):
        resolve_connection({"token": TOKEN, "username": "u"}, {}, client_prefix="x")


def test_client_ids_are_unique_and_short() -> None:
    ids = {resolve_connection({}, {}, client_prefix="tesaiot-listen").client_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("tesaiot-listen-") and len(i) <= 23 for i in ids)


def test_persistent_session_uses_fixed_id_and_keeps_session() -> None:
    settings = resolve_connection({"session": "rec-1"}, {}, client_prefix="x")
    assert settings.client_id == "rec-1" and settings.clean_session is False


@pytest.mark.parametrize(("value", "expected"), [("3.1.1", 4), ("3", 4), ("311", 4), ("5", 5), ("5.0", 5)])
def test_mqtt_versions(value: str, expected: int) -> None:
    assert parse_mqtt_version(value) == expected


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="MQTT version"):
        parse_mqtt_version("4.2")
    with pytest.raises(ConfigError, match="port"):
        resolve_connection({"port": 0}, {}, client_prefix="x")
    with pytest.raises(ConfigError, match="MQTT_USE_TLS"):
        resolve_connection({}, {"MQTT_USE_TLS": "maybe", "MQTT_BROKER_HOST": "h"}, client_prefix="x")


def test_token_topic_rule_on_cloud() -> None:
    settings = resolve_connection({"token": TOKEN}, {}, client_prefix="x")
    check_token_topics(settings, ["device/+/telemetry/#", "devices/a/telemetry"])
    for bad in ("#", "device/+/status", "other/device/telemetry"):
        with pytest.raises(ConfigError, match="may only subscribe"):
            check_token_topics(settings, [bad])
