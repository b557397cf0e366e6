"""Connecting: TLS settings and errors. Helpers for the session layer: the TLS context, and translating what paho,
``ssl`` and ``socket`` raise into the project's exceptions with one clear sentence each."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import ConfigError, ConnectError

# CONNACK codes that mean "your credentials": MQTT 3.1.1 (4, 5) and MQTT 5 / paho 2 (134, 135).
AUTH_REASON_CODES = frozenset({4, 5, 134, 135})
TOKEN_HINT = "the API token may be expired, revoked or wrong: create a new one in the TESAIoT dashboard"
PASSWORD_HINT = "check the username and password"
SESSION_TAKEN_OVER = frozenset({0x8E, 0x87})


def reason_value(reason: Any) -> int:
    """The numeric value of a paho reason code (or of a plain int); -1 when it has none."""
    if isinstance(reason, ReasonCode):
        return int(reason.value)
    try:
        return int(reason)
    except (TypeError, ValueError):
        return -1


def ssl_context(s: ConnectionSettings) -> ssl.SSLContext:
    """The TLS context for ``s``: system CAs or ``ca_file``, an optional client certificate,
    verification off only with ``insecure``. Raises :class:`ConfigError` for unreadable files."""
    try:
        context = ssl.create_default_context(cafile=s.ca_file)
    except FileNotFoundError:
        raise ConfigError(f"CA file not found: {s.ca_file}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load CA file {s.ca_file}: {_ssl_text(exc)}") from None
    if s.cert_file or s.key_file:
        if not s.cert_file:
            raise ConfigError("--key-file needs --cert-file too (mutual TLS)")
        _check_client_pem(s.cert_file, s.key_file)
        try:
            context.load_cert_chain(s.cert_file, s.key_file)
        except FileNotFoundError as exc:
            raise ConfigError(f"client certificate or key not found: {exc.filename}") from None
        except (ssl.SSLError, OSError) as exc:
            if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
                raise ConfigError(f"the client key {s.key_file or s.cert_file} does not belong to the "
                                  f"certificate {s.cert_file}") from None
            raise ConfigError(f"cannot load client certificate/key: {_ssl_text(exc)}") from None
    if s.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check_client_pem(cert_file: str, key_file: str | None) -> None:
    """Say what is wrong with the client certificate and key files in words (``ssl`` says
    ``[SSL] PEM lib``). Raises :class:`ConfigError`."""
    def read(path: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read(1 << 20)
        except FileNotFoundError:
            raise ConfigError(f"client certificate or key not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

    cert = read(cert_file)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ConfigError(f"--cert-file {cert_file} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")
    if key_file is None:
        if b"PRIVATE KEY-----" not in cert:
            raise ConfigError(f"--cert-file {cert_file} holds no private key: give the client's key with --key-file")
    elif b"PRIVATE KEY-----" not in read(key_file):
        raise ConfigError(f"--key-file {key_file} holds no PEM private key ('-----BEGIN ... PRIVATE KEY-----')")


def new_client(s: ConnectionSettings, *, tls: ssl.SSLContext | None = None, **options: Any) -> paho.Client:
    """A paho client for ``s``: protocol, client id, transport (websocket path), clean
    session at 3.1.1, credentials (a TESAIoT token as user name and password) and TLS
    (``tls``, else a context made from ``s``). ``options`` go to ``paho.Client`` as they are
    (``userdata``, ``manual_ack``, ...). Raises :class:`ConfigError` for unusable TLS files."""
    kwargs: dict[str, Any] = {
        "callback_api_version": CallbackAPIVersion.VERSION2,
        "client_id": s.client_id,
        "protocol": paho.MQTTv5 if s.mqtt_version == 5 else paho.MQTTv311,
        "transport": s.url.transport,
        **options,
    }
    if s.mqtt_version != 5:
        kwargs["clean_session"] = s.clean_session
    client = paho.Client(**kwargs)
    if s.url.transport == "websockets":
        client.ws_set_options(path=s.url.path or "/mqtt")
    if s.token is not None:
        client.username_pw_set(s.token.reveal(), s.token.reveal())
    elif s.username is not None:
        client.username_pw_set(s.username, s.password.reveal() if s.password else None)
    if s.url.tls:
        client.tls_set_context(tls if tls is not None else ssl_context(s))
    client.connect_timeout = s.connect_timeout
    return client


def no_answer_error(where: str, s: ConnectionSettings) -> ConnectError:
    """No CONNACK within the connect timeout: with plain MQTT this is what a TLS port does."""
    hint = "" if s.url.tls else " (a TLS port? plain MQTT to a TLS port gets no answer: use mqtts:// or wss://)"
    return ConnectError(f"no answer from the MQTT broker at {where} within {s.connect_timeout:g} s{hint}")


def _ssl_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def translate_connect_error(exc: BaseException, where: str, s: ConnectionSettings) -> BaseException:
    """The project's exception for what connecting to ``where`` raised (interrupts pass through)."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve broker host '{s.url.host}' (DNS: {exc.strerror})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(
            f"TLS certificate verification failed for {where}: {_ssl_text(exc)} "
            "(give the broker's CA with --ca-file, or --insecure to skip verification)"
        )
    if isinstance(exc, ssl.CertificateError):
        return ConnectError(f"TLS certificate does not match {s.url.host}: {exc}")
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS handshake with {where} failed: {_ssl_text(exc)}")
    if isinstance(exc, paho.WebsocketConnectionError):
        hint = "" if s.url.tls else " (a TLS port? use wss://)"
        return ConnectError(f"WebSocket handshake with {where}{s.url.path} failed: {exc}{hint}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection refused by {where} (is an MQTT broker listening there?)")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectError(f"timed out connecting to {where} after {s.connect_timeout:g} s")
    if isinstance(exc, ConnectionResetError):
        return ConnectError(
            f"{where} closed the connection during the handshake (wrong scheme? "
            "mqtts:// and wss:// need a TLS port)"
        )
    if isinstance(exc, OSError):
        return ConnectError(f"cannot connect to {where}: {_ssl_text(exc)}")
    if isinstance(exc, ValueError):
        return ConfigError(f"cannot connect to {where}: {exc}")
    return ConnectError(f"cannot connect to {where}: {type(exc).__name__}: {exc}")
