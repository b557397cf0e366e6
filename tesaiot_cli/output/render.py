"""How messages are shown: for people (upstream subscriber style) and as NDJSON for pipes.

Pure functions: they build strings and bytes, the CLI writes them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, decode_payload, parse_topic, properties_to_json, sensor_type_of
from tesaiot_cli.textfmt import iso_time, paint, utc_text

__all__ = ["escape_control", "human_block", "json_line", "message_record"]

BINARY_PREVIEW_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """Make text safe for a terminal: control characters (ANSI escapes too) become ``\\xNN``."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ALL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def message_record(message: Message) -> dict[str, Any]:
    """The NDJSON object for one message (``listen --json``, ``replay --to -``).

    ``encoding`` says how ``payload`` is given: ``json`` (parsed, numbers exact), ``text``
    (exact) or ``base64`` (exact bytes), as :func:`tesaiot_cli.message.decode_payload`.
    ``properties`` (only when the message has MQTT 5 publish properties) holds those it
    carries, by their MQTT names in snake case; ``correlation_data`` is base64.
    """
    value, encoding = decode_payload(message.payload)
    parts = parse_topic(message.topic)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    record = {
        "time": iso_time(message.time_ns),
        "time_ns": message.time_ns,
        "topic": message.topic,
        "device_id": parts.device_id,
        "sensor_type": sensor,
        "qos": message.qos,
        "retain": message.retain,
        "encoding": encoding,
        "payload": value,
    }
    if message.properties is not None:
        record["properties"] = properties_to_json(message.properties)
    return record


def json_line(message: Message) -> bytes:
    return orjson.dumps(message_record(message)) + b"\n"


def human_block(message: Message, *, color: bool = False, compact: bool = False) -> str:
    """Upstream-subscriber style: time, device, sensor, then the data (pretty JSON,
    text, or a hex preview for binary). ``compact`` puts each message on one line."""
    parts = parse_topic(message.topic)
    value, encoding = decode_payload(message.payload)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    stamp = utc_text(message.time_ns, decimals=3)
    flags = f"QoS {message.qos}" + (", retained" if message.retain else "")
    head = (
        f"{paint('[' + stamp + ']', 'time', color)} "
        f"Device: {paint(escape_control(parts.device_id), 'device', color)}  "
        f"Sensor: {paint(escape_control(sensor), 'sensor', color)}  "
        f"{paint(escape_control(message.topic) + ' (' + flags + ')', 'dim', color)}"
    )
    if encoding == "json":
        body = orjson.dumps(value, option=0 if compact else orjson.OPT_INDENT_2).decode("utf-8")
        if isinstance(value, dict) and ("anomaly" in value or "label" in value) and color:
            body = paint(body, "anomaly", color) if value.get("anomaly") not in (None, False, "normal") else body
        data = f"Data: {escape_control(body, keep_newlines=not compact)}"
    elif encoding == "text":
        text = value if not compact else value.replace("\n", "\\n")
        data = f"Data: {escape_control(text, keep_newlines=not compact)}" if text else "Data: (empty)"
    else:
        size = len(message.payload)
        preview = message.payload[:BINARY_PREVIEW_BYTES].hex(" ")
        more = " ..." if size > BINARY_PREVIEW_BYTES else ""
        data = f"Data (binary, {size} bytes): {preview}{more}"
    return f"{head}  {data}" if compact else f"{head}\n{data}"


# -- templates (listen --template: our {fields}, or mosquitto_sub -F's %-codes) ------------

TEMPLATE_FIELDS = {
    "topic": "the topic",
    "payload": "the payload: its text when it is text (or JSON), else hex or base64 (--binary)",
    "payload_hex": "the payload as hex",
    "payload_base64": "the payload as base64",
    "bytes": "the payload's size in bytes",
    "qos": "0, 1 or 2",
    "retain": "1 for a retained message, else 0",
    "time": "receive time, ISO 8601 UTC with microseconds",
    "time_ns": "receive time, ns since the epoch",
    "device_id": "the device id from the topic",
    "sensor_type": "the sensor type: the topic's sensor part, else the JSON payload's sensor_type",
}
BINARY_FORMATS = ("hex", "base64")
# A template is ours when it names a field ({topic}, {time:>30}); else it is mosquitto_sub's.
_OUR_FIELD = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*[}:!]")


def compile_template(template: str, *, binary: str = "hex", terminal: bool = False) -> Any:
    """A function ``Message -> bytes`` (one line, without its newline) for a template.

    Two syntaxes, told apart by the template itself: ours, ``'{time} {topic} {payload}'``
    (fields: :data:`TEMPLATE_FIELDS`; ``\\t`` and ``\\n`` are a tab and a newline), when it
    names a field; else mosquitto_sub's ``-F`` (:func:`compile_mosquitto_format`).

    ``binary``: how ``{payload}`` shows a payload that is not text (``hex`` or ``base64``).
    ``terminal``: escape control characters (output to a terminal; pipes get the bytes as
    they are). Raises :class:`ConfigError` for an unknown field or code, or a malformed template.
    """
    if binary not in BINARY_FORMATS:
        raise ConfigError(f"invalid --binary {binary!r}: use hex or base64")
    if _OUR_FIELD.search(template) is None:
        return compile_mosquitto_format(template, terminal=terminal)
    mixed = _MOSQUITTO_CODE.search(template)
    if mixed is not None:
        raise ConfigError(f"invalid --template {template!r}: it mixes {{fields}} and mosquitto_sub's %-codes "
                          f"({mixed.group()}): use one of them")
    render = _compile_fields(template, binary=binary, terminal=terminal)
    return lambda message: render(message).encode("utf-8", "surrogateescape")


def _compile_fields(template: str, *, binary: str, terminal: bool) -> Any:
    import base64
    import string

    text = template.replace("\\t", "\t").replace("\\n", "\n")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"invalid --template {template!r}: {exc}") from None
    unknown = sorted(name for name in fields if name not in TEMPLATE_FIELDS)
    if unknown or "" in fields:
        raise ConfigError(f"invalid --template {template!r}: unknown field {{{(unknown or [''])[0]}}}; "
                          f"fields: {', '.join('{' + name + '}' for name in TEMPLATE_FIELDS)}")
    clean = (lambda value: escape_control(value)) if terminal else (lambda value: value)

    def render(message: Message) -> str:
        values: dict[str, Any] = {}
        if "topic" in fields:
            values["topic"] = clean(message.topic)
        if "payload" in fields:
            value, encoding = decode_payload(message.payload)
            if encoding == "base64":
                value = message.payload.hex() if binary == "hex" else value
            else:
                value = clean(message.payload.decode("utf-8"))
            values["payload"] = value
        if "payload_hex" in fields:
            values["payload_hex"] = message.payload.hex()
        if "payload_base64" in fields:
            values["payload_base64"] = base64.b64encode(message.payload).decode("ascii")
        if "device_id" in fields or "sensor_type" in fields:
            parts = parse_topic(message.topic)
            values["device_id"] = clean(parts.device_id)
            values["sensor_type"] = clean(sensor_type_of(message.topic, message.payload))
        values.update(bytes=len(message.payload), qos=message.qos, retain=int(message.retain),
                      time_ns=message.time_ns)
        if "time" in fields:
            values["time"] = iso_time(message.time_ns)
        try:
            return text.format_map(values)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigError(f"invalid --template {template!r}: {exc}") from None

    render(Message("device/d/telemetry", b"\x00", 0, False, 0))  # a bad format spec fails now, not mid-run
    return render


# -- mosquitto_sub -F ----------------------------------------------------------------------

MOSQUITTO_CODES = {
    "%": "a literal %",
    "t": "the topic",
    "p": "the payload's bytes, as they are",
    "q": "the QoS",
    "r": "the retained flag: 1 or 0",
    "l": "the payload's length in bytes",
    "m": "the packet identifier it arrived with (0 at QoS 0)",
    "x": "the payload as hex, lower case",
    "X": "the payload as hex, upper case",
    "I": "receive time, ISO 8601 in the local time zone: 2026-12-07T19:01:26+0700",
    "U": "receive time, Unix seconds with nanoseconds: 1796644862.599643829",
    "j": "the message as JSON: tst, topic, qos, retain, payloadlen, mid (QoS 1, 2), payload (text; null when empty)",
}
# mosquitto_sub's codes that listen cannot give, and why (asked for, they are one line, exit 1)
MOSQUITTO_UNAVAILABLE = {
    "J": "the payload unquoted, which is JSON only when the payload is: use %j, or --json",
    "A": "the MQTT 5 topic alias, which the session resolves and does not keep",
    "S": "the MQTT 5 subscription identifier, which the session does not keep",
    **{code: "an MQTT 5 property: use --json, which has the message's properties"
       for code in ("C", "D", "E", "F", "P", "R")},
}
MOSQUITTO_ESCAPES = {"\\": b"\\", "0": b"\0", "a": b"\a", "e": b"\x1b", "n": b"\n", "r": b"\r", "t": b"\t",
                     "v": b"\v"}
_MOSQUITTO_CODE = re.compile(r"%[-0]*\d*(?:\.\d+)?[%tpqrlxXIUjmJASCDEFPR]")
_SPEC = re.compile(r"%([-0]*)(\d*)(?:\.(\d+))?(.?)", re.DOTALL)
# field width: the codes mosquitto_sub pads (and cuts, with a precision: %t %I)
_WIDTH_CODES = frozenset("tIlmpxX")
_ZERO_CODES = frozenset("lmxX")
_CUT_CODES = frozenset("tI")


class _Moment:
    """A message's receive time in the local time zone, worked out once per line."""

    def __init__(self, time_ns: int) -> None:
        import time

        self.seconds, self.nanoseconds = divmod(time_ns, 1_000_000_000)
        self.local = time.localtime(self.seconds)

    def strftime(self, spec: str) -> str:
        import time

        return time.strftime(spec, self.local)


def _mosquitto_json(message: Message, moment: _Moment) -> bytes:
    """mosquitto_sub's %j. Not its bugs: a payload with a NUL is written whole (mosquitto cuts
    it there), one that is not UTF-8 text is "payload":null with its exact bytes in
    "payload_base64" (mosquitto writes them raw, which is not JSON)."""
    import base64

    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.nanoseconds // 1000:06d}Z" + moment.strftime("%z")
    record: dict[str, Any] = {"tst": stamp, "topic": message.topic, "qos": message.qos,
                              "retain": int(message.retain), "payloadlen": len(message.payload)}
    if message.qos:
        record["mid"] = message.mid
    try:
        record["payload"] = message.payload.decode("utf-8") if message.payload else None
    except UnicodeDecodeError:
        record["payload"] = None
        record["payload_base64"] = base64.b64encode(message.payload).decode("ascii")
    return orjson.dumps(record)


def _code_value(code: str, message: Message, moment: _Moment) -> bytes:
    if code == "t":
        return message.topic.encode("utf-8")
    if code == "p":
        return message.payload
    if code == "q":
        return str(message.qos).encode()
    if code == "r":
        return b"1" if message.retain else b"0"
    if code == "l":
        return str(len(message.payload)).encode()
    if code == "m":
        return str(message.mid).encode()
    if code == "x":
        return message.payload.hex().encode()
    if code == "X":
        return message.payload.hex().upper().encode()
    if code == "I":
        return moment.strftime("%Y-%m-%dT%H:%M:%S%z").encode()
    if code == "U":
        return f"{moment.seconds}.{moment.nanoseconds:09d}".encode()
    return _mosquitto_json(message, moment)  # "j"


def _padded(value: bytes, code: str, flags: str, width: int, precision: int | None) -> bytes:
    """mosquitto_sub's field width (in bytes, as C's printf): right-aligned with blanks, or
    zeros (``0``, for %l %m %x %X), or left-aligned (``-``); a precision cuts %t and %I; a width
    on %p is exact (the payload cut or padded to it, as mosquitto_sub does)."""
    if code not in _WIDTH_CODES:
        return value
    if precision is not None and code in _CUT_CODES:
        value = value[:precision]
    if code == "p" and width:
        value = value[:width]
    missing = width - len(value)
    if missing <= 0:
        return value
    if "-" in flags:
        return value + b" " * missing
    return (b"0" if "0" in flags and code in _ZERO_CODES else b" ") * missing + value


def _bad_format(template: str, why: str) -> ConfigError:
    return ConfigError(f"invalid --template '{escape_control(template)}': {why}; mosquitto_sub's codes here: "
                       f"{' '.join('%' + code for code in MOSQUITTO_CODES)}, @ for strftime, "
                       f"escapes {' '.join(chr(92) + e for e in MOSQUITTO_ESCAPES)}")


def compile_mosquitto_format(template: str, *, terminal: bool = False) -> Any:
    """A function ``Message -> bytes`` for a mosquitto_sub ``-F`` format (see its man page):
    ``%`` codes (:data:`MOSQUITTO_CODES`, with flags ``-``/``0``, a width and a precision),
    ``@`` codes passed to strftime (the receive time, local time zone; ``@N`` nanoseconds,
    ``@@`` a literal @) and ``\\`` escapes (:data:`MOSQUITTO_ESCAPES`). ``terminal``: escape
    control characters in what a code gives (the template's own text, ``\\e`` too, stays).
    Raises :class:`ConfigError` for an unknown or unavailable code, or a cut-off one."""
    Part = bytes | tuple[str, str, str, int, int | None]
    parts: list[Part] = []
    literal = bytearray()
    position = 0
    while position < len(template):
        char = template[position]
        if char == "%":
            match = _SPEC.match(template, position)
            assert match is not None  # the pattern matches any text after a %
            flags, width, precision, code = match.groups()
            position = match.end()
            if not code:
                raise _bad_format(template, "it ends in the middle of a %-code")
            if code in MOSQUITTO_UNAVAILABLE:
                raise _bad_format(template, f"%{code} is not available: {MOSQUITTO_UNAVAILABLE[code]}")
            if code not in MOSQUITTO_CODES:
                raise _bad_format(template, f"unknown code %{code}")
            if code == "%":
                literal += b"%"
                continue
            parts.append(bytes(literal))
            literal.clear()
            parts.append(("%", code, flags, int(width or 0), None if precision is None else int(precision)))
        elif char in "@\\":
            if position + 1 >= len(template):
                raise _bad_format(template, f"it ends in the middle of a {char}-code")
            code = template[position + 1]
            position += 2
            if char == "\\":
                if code not in MOSQUITTO_ESCAPES:
                    raise _bad_format(template, f"unknown escape \\{code}")
                literal += MOSQUITTO_ESCAPES[code]
            elif code == "@":
                literal += b"@"
            else:
                parts.append(bytes(literal))
                literal.clear()
                parts.append(("@", code, "", 0, None))
        else:
            literal += char.encode("utf-8", "surrogateescape")
            position += 1
    parts.append(bytes(literal))
    steps = [part for part in parts if part != b""]

    def render(message: Message) -> bytes:
        moment = _Moment(message.time_ns)
        out = bytearray()
        for step in steps:
            if isinstance(step, bytes):
                out += step
                continue
            kind, code, flags, width, precision = step
            if kind == "@":
                value = (f"{moment.nanoseconds:09d}" if code == "N" else moment.strftime("%" + code)).encode()
            else:
                value = _padded(_code_value(code, message, moment), code, flags, width, precision)
            if terminal:
                value = escape_control(value.decode("utf-8", "backslashreplace")).encode("utf-8")
            out += value
        return bytes(out)

    try:
        render(Message("device/d/telemetry", b"\x00", 0, False, 0))  # a bad strftime code fails now
    except ValueError as exc:
        raise _bad_format(template, str(exc)) from None
    return render
