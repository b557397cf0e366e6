"""Per-device connection settings for ``simulate --connections per-device``.

Each device gets its own client id, and optionally its own username, password and
client certificate, from templates (``{device_id}``, and ``{n}``: the device's number in
the whole fleet, from 1), a password file, or a directory of certificates. Everything is
checked here, before anything connects; errors are :class:`ConfigError` (one line).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from pathlib import Path

from tesaiot_cli.config import ConnectionSettings, Secret
from tesaiot_cli.errors import ConfigError

PLACEHOLDERS = ("device_id", "n")
CERT_SUFFIX, KEY_SUFFIX = ".crt", ".key"


def _check_template(template: str, option: str) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"invalid {option} {template!r}: {exc}") from None
    for name in fields:
        if name not in PLACEHOLDERS:
            raise ConfigError(f"invalid {option} {template!r}: unknown placeholder {{{name}}} "
                              "(use {device_id} or {n}, the device's number in the fleet from 1)")


def fill(template: str, device_id: str, number: int) -> str:
    """``template`` with ``{device_id}`` and ``{n}`` replaced."""
    return template.format(device_id=device_id, n=number)


def read_password_file(path: Path) -> dict[str, Secret]:
    """``username:password`` per line (the plain-text input of ``mosquitto_passwd -U``);
    blank lines and lines starting with ``#`` are skipped. Raises :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"password file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc}") from None
    passwords: dict[str, Secret] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon or not user:
            raise ConfigError(f"{path}, line {number}: expected username:password")
        passwords[user] = Secret(password)
    return passwords


def device_settings(
    base: ConnectionSettings,
    device_ids: Sequence[str],
    *,
    first_number: int,
    client_id: str | None = None,
    username_template: str | None = None,
    password_template: Secret | None = None,
    password_file: Path | None = None,
    cert_dir: Path | None = None,
) -> list[ConnectionSettings]:
    """One device's settings per id: ``base`` with the device's client id (``client_id``
    as a template; without a placeholder ``-{n}`` is appended; default: the device id),
    username, password and certificate. Raises :class:`ConfigError`."""
    id_template = client_id if client_id else "{device_id}"
    _check_template(id_template, "--client-id")
    if not any(f"{{{name}}}" in id_template for name in PLACEHOLDERS):
        id_template += "-{n}"
    if username_template is not None:
        _check_template(username_template, "--username-template")
    if password_template is not None:
        _check_template(password_template.reveal(), "--password-template")
        if password_file is not None:
            raise ConfigError("give either --password-template or --password-file, not both")
    if base.token is not None and (username_template or password_template or password_file):
        raise ConfigError("per-device credentials do not go with --token (a token may not publish)")
    passwords = read_password_file(password_file) if password_file is not None else None
    if cert_dir is not None and not cert_dir.is_dir():
        raise ConfigError(f"certificate directory not found: {cert_dir}")
    if cert_dir is not None and not base.url.tls:
        raise ConfigError("--cert-dir needs a TLS broker URL (mqtts:// or wss://)")
    settings: list[ConnectionSettings] = []
    for offset, device_id in enumerate(device_ids):
        number = first_number + offset
        changes: dict[str, object] = {"client_id": fill(id_template, device_id, number)}
        username = fill(username_template, device_id, number) if username_template is not None else base.username
        if username_template is not None:
            changes["username"] = username
        if password_template is not None:
            changes["password"] = Secret(fill(password_template.reveal(), device_id, number))
        elif passwords is not None:
            if username is None:
                raise ConfigError("--password-file needs --username-template (or --username): the file is keyed by it")
            secret = passwords.get(username)
            if secret is None:
                raise ConfigError(f"no password for user {username!r} (device {device_id}) in {password_file}")
            changes["password"] = secret
        if cert_dir is not None:
            cert, key = cert_dir / f"{device_id}{CERT_SUFFIX}", cert_dir / f"{device_id}{KEY_SUFFIX}"
            for path in (cert, key):
                if not path.is_file():
                    raise ConfigError(f"no certificate file {path.name} for device {device_id} in {cert_dir} "
                                      f"(expected <device id>{CERT_SUFFIX} and <device id>{KEY_SUFFIX})")
            changes["cert_file"], changes["key_file"] = str(cert), str(key)
        settings.append(dataclasses.replace(base, **changes))  # type: ignore[arg-type]
    return settings
