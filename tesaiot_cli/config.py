"""Connection settings: broker URLs, credentials and TLS, resolved once.

Precedence: command-line flag > environment > ``.env`` file > default. The CLI passes
the flags and an already merged environment mapping (``.env`` values under
``os.environ``); nothing here reads ``os.environ`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from tesaiot_cli.errors import ConfigError

TOKEN_PREFIX = "tesa_mqtt_"
CLOUD_URL = "wss://mqtt.tesaiot.com:8085/mqtt"
CLOUD_DOMAIN = "tesaiot.com"
DEFAULT_URL = "mqtt://localhost:1883"

# scheme -> (default port, TLS, transport, default path)
SCHEMES: dict[str, tuple[int, bool, str, str]] = {
    "mqtt": (1883, False, "tcp", ""),
    "mqtts": (8883, True, "tcp", ""),
    "ws": (8083, False, "websockets", "/mqtt"),  # as `tesaiot broker` and EMQX (TESAIoT CE) serve it
    "wss": (8085, True, "websockets", "/mqtt"),
}
SCHEME_ALIASES = {"tcp": "mqtt", "ssl": "mqtts", "tls": "mqtts", "mqtt+ssl": "mqtts"}

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class Secret:
    """A secret string that never shows itself in ``str``, ``repr`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for handing to the MQTT client."""
        return self._value

    def masked(self) -> str:
        return mask_secret(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = masked

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def mask_token(token: str) -> str:
    """The platform's masked form: first 20 characters, ``...``, last 4.

    Short values, which that would nearly reveal, show only a few leading characters.
    """
    if len(token) >= 40:
        return f"{token[:20]}...{token[-4:]}"
    return f"{token[: min(len(token) // 4, 10)]}..."


def mask_secret(value: str) -> str:
    """Masked form of any secret: a token shape keeps its prefix, a password shows nothing."""
    if value.lstrip("\"'").startswith(TOKEN_PREFIX):  # a stray quote stays visible
        return mask_token(value)
    return "****"


@dataclass(frozen=True)
class BrokerURL:
    """A parsed broker URL. ``password`` is never shown by :meth:`display`."""

    scheme: str
    host: str
    port: int
    path: str = ""
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return SCHEMES[self.scheme][1]

    @property
    def transport(self) -> str:
        return SCHEMES[self.scheme][2]

    def display(self) -> str:
        """The URL as safe to show and store: credentials are removed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_broker_url(url: str) -> BrokerURL:
    """Parse ``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://`` URLs; raise :class:`ConfigError`.

    Missing ports default per scheme (1883, 8883, 8083, 8085); ``ws``/``wss`` without a
    path use ``/mqtt``. A bare ``host`` or ``host:port`` means ``mqtt://``.
    """
    text = url.strip()
    if not text:
        raise ConfigError("invalid broker URL '': it is empty")
    if "://" not in text:
        text = f"mqtt://{text}"
    try:
        parts = urlsplit(text)
        raw_port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid broker URL {_safe_url(url)!r}: {_port_problem(exc)}") from None
    scheme = SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in SCHEMES:
        raise ConfigError(
            f"invalid broker URL {_safe_url(url)!r}: unknown scheme '{parts.scheme}' "
            "(use mqtt://, mqtts://, ws:// or wss://)"
        )
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"invalid broker URL {_safe_url(url)!r}: no host")
    default_port, _tls, transport, default_path = SCHEMES[scheme]
    port = raw_port if raw_port is not None else default_port
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid broker URL {_safe_url(url)!r}: port {port} is out of range 1-65535")
    path = parts.path or ""
    if transport == "websockets":
        path = path if path and path != "/" else default_path
    elif path not in ("", "/"):
        raise ConfigError(f"invalid broker URL {_safe_url(url)!r}: a path only goes with ws:// or wss://")
    else:
        path = ""
    username = unquote(parts.username) if parts.username else None
    password = Secret(unquote(parts.password)) if parts.password else None
    return BrokerURL(scheme, host, port, path, username, password)


def _port_problem(exc: ValueError) -> str:
    text = str(exc)
    if "out of range" in text:
        return "port is out of range 1-65535"
    if "Port could not be cast" in text or "invalid literal" in text:
        return "port is not a number"
    return text


def _safe_url(url: str) -> str:
    """The URL with any ``user:password@`` part masked, for error messages."""
    if "@" not in url:
        return url
    head, _, tail = url.rpartition("@")
    scheme, sep, _creds = head.partition("://")
    return f"{scheme}{sep}****@{tail}" if sep else f"****@{tail}"


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open one MQTT session. Secrets are :class:`Secret`."""

    url: BrokerURL
    client_id: str
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    mqtt_version: int = 4  # 4 is MQTT 3.1.1 on the wire, 5 is MQTT 5.0
    keepalive: int = 60
    connect_timeout: float = 10.0
    clean_session: bool = True
    # Settings from the environment that do not apply (e.g. CA_CERT_PATH with mqtt://),
    # each with why: the CLI says so instead of ignoring them without a word.
    unused: tuple[str, ...] = ()
    paho_path: str = "auto"  # "public": paho's public API only (TESAIOT_PAHO_PATH), else the probe decides

    @property
    def is_cloud(self) -> bool:
        return _is_cloud(self.url)

    def describe(self) -> str:
        """One safe line: URL, client id, and how we authenticate (masked)."""
        if self.token is not None:
            auth = f"token {self.token.masked()}"
        elif self.username is not None:
            auth = f"user {self.username}" + (" (password set)" if self.password else "")
        else:
            auth = "anonymous"
        return f"{self.url.display()} client-id={self.client_id} auth={auth}"


def new_client_id(prefix: str) -> str:
    """A unique client id: the prefix plus 6 random hex characters (23 characters or fewer)."""
    import secrets  # here, not at the top: `tesaiot --help` should not pay for it

    return f"{prefix[:16]}-{secrets.token_hex(3)}"


def parse_bool(value: str, *, name: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"invalid {name} {value!r}: use true or false")


def parse_mqtt_version(value: str | int) -> int:
    """``3``, ``3.1.1``, ``311`` or ``4`` mean MQTT 3.1.1 (protocol level 4); ``5``/``5.0`` mean 5."""
    word = str(value).strip().lower()
    if word in ("3", "3.1.1", "311", "4", "v3", "v311"):
        return 4
    if word in ("5", "5.0", "v5"):
        return 5
    raise ConfigError(f"invalid MQTT version {value!r}: use 3.1.1 or 5")


def _pick(flags: Mapping[str, Any], key: str, env: Mapping[str, str], *names: str) -> Any:
    value = flags.get(key)
    if value is not None:
        return value
    for name in names:
        env_value = env.get(name)
        if env_value not in (None, ""):
            return env_value
    return None


def resolve_connection(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    client_prefix: str,
) -> ConnectionSettings:
    """Resolve connection settings from flags and environment; raise :class:`ConfigError`.

    ``flags`` keys (missing or ``None`` means not given): broker, host, port, tls, token,
    username, password, ca_file, cert_file, key_file, insecure, mqtt_version, client_id,
    session, keepalive, connect_timeout. ``env`` holds variables by their upstream names.
    """
    token_text = _pick(flags, "token", env, "MQTT_API_TOKEN", "TESAIOT_API_TOKEN")
    url_text = _pick(flags, "broker", env, "MQTT_BROKER_URL")
    host = _pick(flags, "host", env, "MQTT_BROKER_HOST")
    port_value = _pick(flags, "port", env, "MQTT_BROKER_PORT")
    tls_value = _pick(flags, "tls", env, "MQTT_USE_TLS")
    use_tls = tls_value if isinstance(tls_value, bool) else (
        parse_bool(tls_value, name="MQTT_USE_TLS") if tls_value is not None else None
    )

    if url_text is None:
        if host is not None:
            url_text = f"{'mqtts' if use_tls else 'mqtt'}://{_bracket(str(host))}"
        else:
            url_text = CLOUD_URL if token_text and port_value is None else DEFAULT_URL
    url = parse_broker_url(str(url_text))
    if flags.get("host") is not None and (flags.get("broker") or env.get("MQTT_BROKER_URL")):
        url = replace(url, host=str(flags["host"]))
    if use_tls and not url.tls:
        url = replace(url, scheme="mqtts" if url.transport == "tcp" else "wss")
        if port_value is None and url.scheme == "mqtts" and url.port == 1883:
            url = replace(url, port=8883)
    if port_value is not None:
        url = replace(url, port=_parse_port(port_value))

    username = _pick(flags, "username", env, "MQTT_USERNAME") or url.username
    password_text = flags.get("password") or (url.password.reveal() if url.password else None) or env.get(
        "MQTT_PASSWORD"
    ) or None
    token: Secret | None = None
    if token_text:
        token_str = str(token_text).strip()
        if flags.get("username"):
            raise ConfigError("give either --token or --username/--password, not both")
        token = Secret(token_str)
        username = None
        password_text = None
    settings_token_check(token, url)
    cert_file = _pick(flags, "cert_file", env, "MQTT_CLIENT_CERT")
    if _is_cloud(url) and token is None and username is None and cert_file is None:
        raise ConfigError(
            "the TESAIoT cloud needs credentials: set --token or MQTT_API_TOKEN "
            "(or --username, or --cert-file/--key-file for a device)"
        )

    unused: list[str] = []
    if password_text and username is None and token is None:
        if flags.get("password"):
            raise ConfigError("--password needs --username (or, for the TESAIoT cloud, --token)")
        unused.append("MQTT_PASSWORD is set but no username is: the password is not used (set MQTT_USERNAME)")
        password_text = None
    ca_file = _pick(flags, "ca_file", env, "CA_CERT_PATH", "MQTT_CA_CERT")
    key_file = _pick(flags, "key_file", env, "MQTT_CLIENT_KEY")
    insecure = bool(flags.get("insecure"))
    if not url.tls:
        given = [name for name, key in (("--ca-file", "ca_file"), ("--cert-file", "cert_file"),
                                        ("--key-file", "key_file"), ("--insecure", "insecure")) if flags.get(key)]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} TLS, but {url.display()} is plain "
                f"{'MQTT' if url.transport == 'tcp' else 'WebSocket'}: use "
                f"{'mqtts://' if url.transport == 'tcp' else 'wss://'} (or --tls)")
        for name, value in (("CA_CERT_PATH/MQTT_CA_CERT", ca_file), ("MQTT_CLIENT_CERT", cert_file),
                            ("MQTT_CLIENT_KEY", key_file)):
            if value:
                unused.append(f"{name} is set but {url.display()} is not TLS: it is not used "
                              "(mqtts:// or wss://, or MQTT_USE_TLS=true, to use it)")
        ca_file = cert_file = key_file = None
    session_name = flags.get("session")
    client_id = _pick(flags, "client_id", env, "MQTT_CLIENT_ID")
    if session_name:
        client_id = session_name if client_id is None else client_id
    client_id = str(client_id) if client_id else new_client_id(client_prefix)

    version_value = _pick(flags, "mqtt_version", env, "MQTT_VERSION")
    keepalive = int(flags.get("keepalive") or 60)
    if keepalive < 5 or keepalive > 65535:
        raise ConfigError(f"invalid keepalive {keepalive}: use 5 to 65535 seconds")
    connect_timeout = float(flags.get("connect_timeout") or 10.0)
    if connect_timeout <= 0:
        raise ConfigError(f"invalid connect timeout {connect_timeout}: it must be positive")

    return ConnectionSettings(
        url=url,
        client_id=client_id,
        username=username if token is None else None,
        password=Secret(str(password_text)) if password_text else None,
        token=token,
        ca_file=str(ca_file) if ca_file else None,
        cert_file=cert_file,
        key_file=key_file,
        insecure=insecure,
        mqtt_version=parse_mqtt_version(version_value) if version_value is not None else 4,
        keepalive=keepalive,
        connect_timeout=connect_timeout,
        paho_path="public" if str(env.get("TESAIOT_PAHO_PATH", "")).strip().lower() == "public" else "auto",
        clean_session=not session_name,
        unused=tuple(unused),
    )


def settings_token_check(token: Secret | None, url: BrokerURL) -> None:
    """An API token (for any broker: it is the TESAIoT platform's credential) has the
    platform's form ``tesa_mqtt_<org>_<random>``: the case-sensitive prefix, then an org
    and a random part; no quotes around it, no white space. Raises :class:`ConfigError`."""
    if token is None:
        return
    value = token.reveal()
    if not value:
        raise ConfigError("the API token is empty (set --token or MQTT_API_TOKEN)")
    shown = f"{token.masked()!r}"
    if value[0] in "\"'" or value[-1] in "\"'":
        raise ConfigError(f"invalid API token {shown}: it is wrapped in quotes; give the token without them")
    if any(ch.isspace() for ch in value):
        raise ConfigError(f"invalid API token {shown}: it contains white space")
    if not value.startswith(TOKEN_PREFIX):
        raise ConfigError(
            f"invalid API token {shown}: TESAIoT API tokens start with '{TOKEN_PREFIX}' "
            "(copy it again from the dashboard; for other brokers use --username/--password)"
        )
    org, _, random_part = value[len(TOKEN_PREFIX):].rpartition("_")
    if not org or not random_part:
        raise ConfigError(
            f"invalid API token {shown}: it is cut short (a token is {TOKEN_PREFIX}<org>_<random>; "
            "copy all of it again from the dashboard)"
        )


def _parse_port(value: Any) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"invalid port {value!r}: not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid port {port}: out of range 1-65535")
    return port


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _is_cloud(url: BrokerURL) -> bool:
    host = url.host.lower()
    return host == CLOUD_DOMAIN or host.endswith("." + CLOUD_DOMAIN)


def check_token_topics(settings: ConnectionSettings, filters: list[str] | tuple[str, ...]) -> None:
    """On the TESAIoT cloud, a token may only subscribe to ``device/...`` (or ``devices/...``)
    filters that contain ``/telemetry``: say so before the broker silently refuses.

    Raises :class:`ConfigError`.
    """
    if settings.token is None or not settings.is_cloud:
        return
    for topic_filter in filters:
        if not topic_filter.startswith(("device/", "devices/")) or "/telemetry" not in topic_filter:
            raise ConfigError(
                f"a TESAIoT API token may only subscribe to topics that start with device/ and contain "
                f"/telemetry, not {topic_filter!r} (for example 'device/+/telemetry/#')"
            )
