"""Bad input, across every command, in one table: each case gets one clear line on stderr,
its documented exit code (README "Exit codes"), never a traceback, and leaves no file
behind (nothing half-written, nothing changed).

Most cases run in-process through Typer's CliRunner (milliseconds each: the table is
large); ``test_a_real_process_sample`` runs a sample of them as real processes. Payloads
of every kind (binary, non-UTF-8, control characters, 1 MB) go through every command in
``test_odd_payloads_everywhere``; a publish that the broker's ACL denies is in
``test_acl_denied_publish``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tesaiot_cli.cli import all_commands, app
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter
from tesaiot_cli.recording.meta import METADATA_KEY
from tests.support.broker import EXPIRED_TOKEN, READER, READER_PASSWORD, TOKEN, USER, Mosquitto, free_ports
from tests.support.cli import Proc, clean_env, run_cli
from tests.support.clients import Collector, publish
from tests.support.fakes import uid

T0 = 1_790_000_000_000_000_000
CLI_ENV_PREFIXES = ("MQTT_", "TESAIOT_", "CA_CERT_PATH", "DEVICE_ID", "PUBLISH_INTERVAL", "ANOMALY_INTERVAL")
runner = CliRunner()


# -- the files the cases read ---------------------------------------------------------------


def make_files(directory: Path, pki_other_ca: Path) -> None:
    """Good, damaged and foreign recordings, and a few other files, in ``directory``."""
    directory.mkdir(exist_ok=True)
    messages = [Message(f"device/d{i % 2}/telemetry", b'{"n": %d}' % i + b"x" * 200, 1, False, T0 + i * 1000)
                for i in range(50)]
    for fmt in ("parquet", "jsonl"):
        with open_writer(directory / f"good.{fmt}", metadata=RecordingMetadata(), crash_safe=False) as writer:
            for message in messages:
                writer.write(message)
    (directory / "garbage.parquet").write_bytes(b"not parquet at all\n")
    (directory / "garbage.jsonl").write_bytes(b"\x00\x01 not json\n")
    (directory / "parquet_as.jsonl").write_bytes((directory / "good.parquet").read_bytes())
    (directory / "jsonl_as.parquet").write_bytes((directory / "good.jsonl").read_bytes())
    # Two row groups; a byte of the first one's payload page flipped (the page checksum sees it).
    writer = ParquetWriter(directory / "corrupt.parquet", RecordingMetadata(), crash_safe=False,
                           row_group_rows=25).open()
    for index, message in enumerate(messages):
        writer.write(message)
        if index == 24:
            writer.flush()
    writer.close()
    data = bytearray((directory / "corrupt.parquet").read_bytes())
    column = pq.ParquetFile(directory / "corrupt.parquet").metadata.row_group(0).column(2)
    data[column.data_page_offset + column.total_compressed_size - 10] ^= 0xFF
    (directory / "corrupt.parquet").write_bytes(bytes(data))
    lines = (directory / "good.jsonl").read_bytes().splitlines(keepends=True)
    lines[3] = b'{"time": "soon", "topic": "t", "payload": "x"}\n'
    (directory / "corrupt.jsonl").write_bytes(b"".join(lines))
    (directory / "bigtime.jsonl").write_bytes(b'{"time": 1, "topic": "t", "payload": "a"}\n'
                                              b'{"time": 18446744073709551615, "topic": "t", "payload": "b"}\n'
                                              b'{"time": 3, "topic": "t", "payload": "c"}\n')
    good = (directory / "good.parquet").read_bytes()
    (directory / "truncated.parquet").write_bytes(good[: len(good) // 2])
    good = (directory / "good.jsonl").read_bytes()
    (directory / "truncated.jsonl").write_bytes(good[:-40])
    newer = {"format": "tesaiot-recording", "format_version": 99}
    (directory / "v99.jsonl").write_bytes(orjson.dumps({"tesaiot_recording": newer}) + b"\n")
    table = pa.table({"time": pa.array([1], pa.int64()), "topic": ["t"], "payload": [b"x"]})
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: orjson.dumps(newer)}), directory / "v99.parquet")
    (directory / "empty.parquet").write_bytes(b"")
    (directory / "empty.jsonl").write_bytes(b"")
    (directory / "rec.txt").write_text("x")
    (directory / "dir.parquet").mkdir()
    (directory / "dir.jsonl").mkdir()
    (directory / "dir.plain").mkdir()  # a directory of recordings, not a dataset
    (directory / "dir.plain" / "a.parquet").write_bytes((directory / "good.parquet").read_bytes())
    (directory / "dir.plain" / "notes.txt").write_text("x")
    os.mkfifo(directory / "fifo.jsonl")  # reading it would block forever
    os.mkfifo(directory / "fifo.parquet")
    (directory / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (directory / "other-ca.pem").write_bytes(pki_other_ca.read_bytes())
    if os.geteuid() != 0:  # root reads anything: then the directory and the FIFOs stand for "unreadable"
        (directory / "locked.parquet").write_bytes(good)
        (directory / "locked.parquet").chmod(0)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in sorted(directory.rglob("*")):
        status = path.lstat()
        found[str(path.relative_to(directory))] = (status.st_size, status.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Path:
    directory = tmp_path_factory.mktemp("bad-input") / "f"
    make_files(directory, broker.pki.other_ca_cert)
    return directory


@pytest.fixture
def files(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files, shared by every case (each case checks it changed nothing, and removes
    what it was expected to create)."""
    monkeypatch.chdir(zoo.parent)  # no stray .env from the developer's working directory
    return zoo


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    text: str
    env: dict[str, str] = field(default_factory=dict)
    creates: tuple[str, ...] = ()  # files a successful case is expected to write
    streamed: bool = False  # replay streams: what came before the damage was already sent


def case(*args: str, code: int, text: str, env: dict[str, str] | None = None, creates: tuple[str, ...] = (),
         streamed: bool = False) -> Case:
    return Case(args, code, text, env or {}, creates, streamed)


RECORDING_ERRORS = [  # (file, exit code, text of the error)
    ("missing.parquet", 5, "recording not found"),
    ("missing.jsonl", 5, "recording not found"),
    # An empty directory (a directory is read as a dataset of Parquet files: this one has none).
    ("dir.parquet", 5, "dir.parquet"),
    ("dir.jsonl", 5, "dir.jsonl"),
    # 16.6: said to be no dataset (was "partitioned by None, 0 recorder(s)" or about one file in it).
    ("dir.plain", 5, "is a directory but not a tesaiot dataset (no _tesaiot/dataset.json)"),
    ("fifo.parquet", 5, "is not a regular file"),
    ("fifo.jsonl", 5, "is not a regular file"),
    ("garbage.parquet", 5, "is not a readable Parquet file"),
    ("garbage.jsonl", 5, "line 1 is not JSON: not a JSONL recording"),
    ("parquet_as.jsonl", 5, "not a JSONL recording"),
    ("jsonl_as.parquet", 5, "is not a readable Parquet file"),
    ("truncated.parquet", 5, "is not a readable Parquet file: truncated"),
    ("v99.parquet", 5, "uses recording format version 99"),
    ("v99.jsonl", 5, "uses recording format version 99"),
    ("empty.parquet", 5, "is not a readable Parquet file"),
    ("empty.jsonl", 5, "is empty: not a recording"),
    ("rec.txt", 1, "cannot tell the recording format"),
] + ([("locked.parquet", 5, "Permission denied")] if os.geteuid() != 0 else [])

DAMAGED = [  # readable in part: reading all of it fails; recover saves the rest (exit 0)
    ("corrupt.parquet", 5, "row group 1 of 2 is damaged", "saved 25 readable messages", "corrupt.recovered.parquet"),
    ("corrupt.jsonl", 5, "line 4 is damaged", "saved 49 readable messages", "corrupt.recovered.jsonl"),
    ("bigtime.jsonl", 5, "line 2 is damaged ('time' is out of range", "saved 2 readable messages",
     "bigtime.recovered.jsonl"),
]


def recording_cases() -> Iterator[tuple[str, Case]]:
    for name, code, text in RECORDING_ERRORS:
        other = "out.parquet" if name.endswith(".jsonl") else "out.jsonl"
        yield f"info-{name}", case("info", f"@{name}", code=code, text=text)
        yield f"convert-{name}", case("convert", f"@{name}", f"@{other}", code=code, text=text)
        if not name.startswith("dir."):  # recover on a dataset directory: nothing unsealed, nothing to do
            yield f"recover-{name}", case("recover", f"@{name}", code=code, text=text)
        yield f"replay-{name}", case("replay", f"@{name}", "--to", "-", code=code, text=text)
    for name, code, text, saved, recovered in DAMAGED:
        yield f"info-{name}", case("info", f"@{name}", code=code, text=text)
        yield f"convert-{name}", case("convert", f"@{name}", "@out.jsonl", code=code, text=text)
        yield f"replay-{name}", case("replay", f"@{name}", "--to", "-", code=code, text=text, streamed=True)
        yield f"recover-{name}", case("recover", f"@{name}", code=0, text=saved, creates=(recovered,))
    # A crash's torn last line is not an error: the rest is read, with a warning.
    torn = "the last line (307 bytes) is incomplete"
    yield "info-torn.jsonl", case("info", "@truncated.jsonl", code=0, text=torn)
    yield "convert-torn.jsonl", case("convert", "@truncated.jsonl", "@out.parquet", code=0, text=torn,
                                     creates=("out.parquet",))
    yield "replay-torn.jsonl", case("replay", "@truncated.jsonl", "--to", "-", "--speed", "max", code=0, text=torn)
    yield "convert-same-file", case("convert", "@good.jsonl", "@good.jsonl", code=1, text="the same file")
    yield "convert-exists", case("convert", "@good.jsonl", "@good.parquet", code=1, text="already exists")
    yield "convert-bad-format", case("convert", "@good.jsonl", "@x.csv", code=1, text="cannot tell the recording")
    yield "info-format-option", case("info", "@good.jsonl", "--format", "csv", code=1,
                                     text="unknown recording format 'csv'")


# What each networked command needs besides the case's options; the bound (count, duration)
# only matters if a case wrongly got through.
NETWORKED = {
    "listen": ("listen", "--timeout", "3"),
    "record": ("record", "@new.parquet", "--duration", "3"),
    "simulate": ("simulate", "--count", "1"),
    "replay": ("replay", "@good.jsonl", "--speed", "max"),
}


def connection_cases() -> Iterator[tuple[str, Case]]:
    bad = [  # (id, options, env, code, text)
        ("no-host", ["-b", "mqtt://"], {}, 1, "no host"),
        ("empty-url", ["-b", " "], {}, 1, "it is empty"),
        ("port-not-a-number", ["-b", "mqtt://h:abc"], {}, 1, "port is not a number"),
        ("unknown-scheme", ["-b", "http://h"], {}, 1, "unknown scheme 'http'"),
        ("unknown-scheme-amqp", ["-b", "amqp://h:5672"], {}, 1, "unknown scheme 'amqp'"),
        ("bad-ipv6", ["-b", "mqtt://[::1"], {}, 1, "invalid broker URL"),
        ("path-on-tcp", ["-b", "mqtt://h/x"], {}, 1, "a path only goes with ws:// or wss://"),
        ("port-70000", ["-b", "mqtt://h:70000"], {}, 1, "out of range 1-65535"),
        ("port-0", ["-b", "mqtt://h:0"], {}, 1, "out of range 1-65535"),
        ("port-flag-65536", ["--port", "65536"], {}, 1, "out of range 1-65535"),
        ("port-env--1", [], {"MQTT_BROKER_PORT": "-1"}, 1, "out of range 1-65535"),
        ("port-env-word", [], {"MQTT_BROKER_PORT": "eighty"}, 1, "not a number"),
        ("tls-env-word", [], {"MQTT_USE_TLS": "maybe"}, 1, "invalid MQTT_USE_TLS"),
        ("mqtt-version", ["--mqtt-version", "4.2"], {}, 1, "invalid MQTT version"),
        ("keepalive", ["--keepalive", "1"], {}, 1, "invalid keepalive"),
        ("connect-timeout", ["--connect-timeout", "-1"], {}, 1, "invalid connect timeout"),
        ("env-file-missing", ["--env-file", "@missing.env"], {}, 1, "env file not found"),
        ("ca-missing", ["-b", "{tls}", "--ca-file", "@missing.pem"], {}, 1, "CA file not found"),
        ("ca-garbage", ["-b", "{tls}", "--ca-file", "@garbage.pem"], {}, 1, "cannot load CA file"),
        ("key-without-cert", ["-b", "{tls}", "--key-file", "@garbage.pem"], {}, 1, "needs --cert-file"),
        ("user-and-token", ["--token", TOKEN, "-u", USER], {}, 1, "either --token or --username"),
        # TLS options on a plain URL were ignored without a word: refused (16.2).
        ("ca-on-plain", ["-b", "{free}", "--ca-file", "@other-ca.pem"], {}, 1, "--ca-file needs TLS"),
        ("cert-on-plain-ws", ["-b", "ws://127.0.0.1:1", "--cert-file", "@other-ca.pem"], {}, 1,
         "plain WebSocket: use wss://"),
        ("insecure-on-plain", ["-b", "{free}", "--insecure"], {}, 1, "--insecure needs TLS"),
        # 16.9: say what is wrong, not "[SSL] PEM lib"; a password needs a username.
        ("cert-without-key", ["-b", "{tls}", "--cert-file", "@other-ca.pem"], {}, 1, "holds no private key"),
        ("cert-not-pem", ["-b", "{tls}", "--cert-file", "@rec.txt"], {}, 1, "holds no PEM certificate"),
        ("password-without-user", ["--password", "pw"], {}, 1, "--password needs --username"),
        # 16.10: plain MQTT to a TLS port gets no answer: the error says which scheme to use.
        ("plain-to-tls-port", ["-b", "mqtt://127.0.0.1:{tls_port}", "--connect-timeout", "2"], {}, 3,
         "a TLS port? plain MQTT to a TLS port gets no answer: use mqtts://"),
        ("cloud-no-credentials", ["-b", "wss://mqtt.tesaiot.com"], {}, 1, "needs credentials"),
        ("refused", ["-b", "{free}", "--connect-timeout", "3"], {}, 3, "connection refused"),
        ("dns", ["-b", "mqtt://no-such-host.invalid", "--connect-timeout", "3"], {}, 3, "cannot resolve"),
        ("wrong-ca", ["-b", "{tls}", "--ca-file", "@other-ca.pem"], {}, 3, "certificate verification failed"),
        ("system-ca", ["-b", "{tls}"], {}, 3, "certificate verification failed"),
        ("wrong-password", ["-b", "{auth}", "-u", USER, "--password", "wrong"], {}, 4,
         "authentication failed"),
    ]
    for name, (command, *needs) in NETWORKED.items():
        for ident, options, env, code, text in bad:
            yield f"{name}-{ident}", case(command, *needs, *options, code=code, text=text, env=env)
    for name in ("listen", "record"):  # may subscribe with a token: the broker says no
        command, *needs = NETWORKED[name]
        yield f"{name}-expired-token", case(command, *needs, "-b", "{auth}", code=4, text="token may be expired",
                                           env={"MQTT_API_TOKEN": EXPIRED_TOKEN})
        yield f"{name}-token-white-space", case(command, *needs, "--token", "tesa_mqtt_a b", code=1,
                                                text="white space")
        yield f"{name}-token-prefix-cloud", case(command, *needs, "--token", "tesa_MQTT_x" * 5, code=1,
                                                 text="start with 'tesa_mqtt_'")
        yield f"{name}-token-topic-cloud", case(command, *needs, "--token", TOKEN, "-t", "#", code=1,
                                                text="may only subscribe to topics that start with device/")
        # 16.11: the token's form is checked for every broker; a stray quote is named, and shown.
        yield f"{name}-token-prefix-any-host", case(command, *needs, "-b", "{auth}", "--token", "abc" * 15,
                                                    code=1, text="start with 'tesa_mqtt_'")
        yield f"{name}-token-prefix-only", case(command, *needs, "-b", "{auth}", "--token", "tesa_mqtt_", code=1,
                                                text="it is cut short")
        yield f"{name}-token-quoted", case(command, *needs, "-b", "{auth}", "--token", f'"{TOKEN}"', code=1,
                                           text=f"invalid API token '\"{TOKEN[:19]}...{TOKEN[-3:]}\"': it is "
                                                "wrapped in quotes")
    for name in ("simulate", "replay"):  # a token may only subscribe: said before connecting
        command, *needs = NETWORKED[name]
        for source, options, env in (("flag", ["--token", TOKEN], {}), ("env", [], {"MQTT_API_TOKEN": TOKEN})):
            yield f"{name}-token-{source}", case(command, *needs, "-b", "{auth}", *options, code=1,
                                                 text="may only subscribe", env=env)


def option_cases() -> Iterator[tuple[str, Case]]:
    listen, record = NETWORKED["listen"][:1], NETWORKED["record"][:2]
    simulate, replay = ("simulate",), ("replay", "@good.jsonl")
    table = [
        (listen, ["--count", "0"], 1, "invalid --count 0"),
        (listen, ["--count", "-5"], 1, "invalid --count -5"),
        (listen, ["--timeout", "0"], 1, "invalid --timeout"),
        (listen, ["--timeout", "-1"], 1, "invalid --timeout"),
        (record, ["--count", "-1"], 1, "invalid --count -1"),
        (record, ["--duration", "0"], 1, "invalid --duration"),
        (record, ["--duration", "-3"], 1, "invalid --duration"),
        (record, ["--session", " "], 1, "invalid --session"),
        (record, ["--format", "csv"], 1, "unknown recording format"),
        (("record", "@nodir/x.parquet"), [], 5, "does not exist"),
        (("record", "@x.csv"), [], 1, "cannot tell the recording format"),
        (("record", "@good.parquet"), [], 1, "already exists"),
        (simulate, ["--count", "-1"], 1, "--count"),
        (simulate, ["--interval", "-1"], 1, "invalid interval"),
        (simulate, ["--duration", "-1"], 1, "--duration"),
        (simulate, ["--devices", "0"], 1, "--devices"),
        (simulate, ["--anomaly-every", "-1"], 1, "anomaly"),
        (simulate, ["--queue", "0"], 1, "--queue"),
        (simulate, ["--interval", "0"], 1, "needs --count or --duration"),
        (simulate, ["--record", "@good.parquet", "--count", "1"], 1, "already exists"),
        (replay, ["--speed", "-1", "--to", "-"], 1, "invalid --speed"),
        (replay, ["--speed", "0", "--to", "-"], 1, "invalid --speed"),
        (replay, ["--speed", "nan", "--to", "-"], 1, "invalid --speed"),
        (replay, ["--speed", "fast", "--to", "-"], 1, "invalid --speed"),
        (replay, ["--loop", "0", "--to", "-"], 1, "invalid --loop"),
        (replay, ["--loop", "-2", "--to", "-"], 1, "invalid --loop"),
        (replay, ["--start", "yesterday", "--to", "-"], 1, "invalid --start"),
        (replay, ["--to", "out.txt"], 1, "invalid --to"),
    ]
    for index, (command, options, code, text) in enumerate(table):
        yield f"{command[0]}-option-{index}", case(*command, *options, code=code, text=text)
    for command, topic_option in ((listen, "-t"), (record, "-t"), (replay + ("--to", "-"), "--topic")):
        for topic in ("a/#/b", "+x", "a/b#", "", "a/\x00"):
            yield f"{command[0]}-filter-{topic!r}", case(*command, topic_option, topic, code=1,
                                                        text="invalid topic filter")
    for topic in ("a/+/b", "device/#", ""):
        yield f"simulate-topic-{topic!r}", case("simulate", "--topic", topic, "--count", "1", code=1,
                                               text="topic")
    for command in (listen, record, simulate, replay):  # command-line syntax: click's own exit 2
        yield f"{command[0]}-unknown-option", case(*command, "--no-such-option", code=2, text="No such option")
    # An invalid value is exit 1 and our one line for every option, typer's checks included
    # (exit 2 and a boxed usage text before); syntax (missing argument) stays click's exit 2.
    yield "listen-qos-3", case("listen", "--qos", "3", code=1, text="invalid --qos '3': it must be")
    yield "replay-qos-short-9", case("replay", "@good.jsonl", "-q9", code=1, text="invalid --qos '9'")
    yield "record-no-file", case("record", code=2, text="Missing argument 'FILE'")
    for name, option, needs in numeric_options():
        yield f"{name}-{option}-not-a-number", case(name, *needs, option, "abc", code=1,
                                                    text=f"invalid {option} 'abc': it must be")


POSITIONAL = {"record": ("@new.parquet",), "replay": ("@good.jsonl",), "info": ("@good.jsonl",),
              "recover": ("@good.jsonl",), "convert": ("@good.jsonl", "@out.parquet")}


def numeric_options() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(command, --option, positional arguments) for every int or float option of every command."""
    import inspect
    import typing

    for name, command in all_commands().items():
        hints = typing.get_type_hints(command.callback, include_extras=False)
        for param in command.params:
            kind = hints.get(param.name or "")
            kinds = set(typing.get_args(kind)) | {kind}
            if kinds & {int, float} and param.param_type_name == "option":
                longest = max(param.opts, key=len)
                yield name, longest, POSITIONAL.get(name, ())
        assert inspect.signature(command.callback)  # the hints above came from a real signature


CASES = dict([*recording_cases(), *connection_cases(), *option_cases()])


def expand(args: tuple[str, ...], files: Path, broker: Mosquitto, free: int) -> list[str]:
    values = {"tls": broker.tls_url, "auth": broker.auth_url, "free": f"mqtt://127.0.0.1:{free}",
              "tls_port": str(broker.tls_port)}
    out = []
    for arg in args:
        if arg.startswith("@"):
            arg = str(files / arg[1:])
        out.append(arg.format(**values) if "{" in arg else arg)
    return out


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI in-process with a clean environment. Any exception that escapes the
    command (instead of a clean exit) fails the test: that would be a traceback."""
    full_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(CLI_ENV_PREFIXES)}
    # record switches Arrow's allocator for itself; in-process, keep the test process's one.
    full_env.update({"ARROW_DEFAULT_MEMORY_POOL": "system", "NO_COLOR": "1", **env})
    result = runner.invoke(app, args, env=full_env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: an exception escaped: {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def check(code: int, stdout: str, stderr: str, expected: Case) -> None:
    assert code == expected.code, (code, stderr)
    assert expected.text in stderr, stderr
    assert "Traceback" not in stderr + stdout
    if expected.code == 0:
        return
    if expected.code == 2:  # click's usage message: "Usage: ... Error: ..."
        assert stderr.count("Error:") == 1, stderr
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tesaiot: error: ")]
    assert len(errors) == 1 and expected.text in errors[0], stderr
    assert all(line.startswith("tesaiot: ") for line in lines), stderr  # nothing but our own lines
    assert stdout == "" or expected.streamed


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, files: Path, broker: Mosquitto) -> None:
    expected = CASES[name]
    before = snapshot(files)
    args = expand(expected.args, files, broker, free_ports(1)[0])
    code, stdout, stderr = invoke(args, expected.env)
    check(code, stdout, stderr, expected)
    after = snapshot(files)
    created = sorted(set(after) - set(before))
    for name in expected.creates:
        (files / name).unlink(missing_ok=True)
    assert created == sorted(expected.creates), f"left behind: {created}"
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed either


def test_every_documented_code_is_in_the_table() -> None:
    assert {c.code for c in CASES.values()} == {0, 1, 2, 3, 4, 5}  # 6, 7: timeout and undelivered, below
    commands = {c.args[0] for c in CASES.values()}
    assert {"listen", "record", "simulate", "replay", "info", "convert", "recover", "broker"} <= commands


SAMPLE = ["info-garbage.parquet", "convert-v99.jsonl", "recover-truncated.parquet", "replay-fifo.jsonl",
          "listen-refused", "record-dns", "simulate-wrong-ca", "replay-token-env", "record-expired-token",
          "listen-filter-'a/#/b'", "simulate-option-13"]


def test_a_real_process_sample(files: Path, broker: Mosquitto) -> None:
    """The same cases, as real processes: what a user sees, exit status and all."""
    for name in SAMPLE:
        expected = CASES[name]
        before = snapshot(files)
        args = expand(expected.args, files, broker, free_ports(1)[0])
        env = clean_env(**expected.env)
        result = subprocess.run([*_python(), *args], env=env, capture_output=True, text=True, timeout=60,
                                cwd=files.parent)
        check(result.returncode, result.stdout, result.stderr, expected)
        assert snapshot(files) == before, name


def _python() -> list[str]:
    import sys

    return [sys.executable, "-m", "tesaiot_cli"]


# -- payloads of every kind, through every command ---------------------------------------------


def odd_payloads() -> dict[str, bytes]:
    return {
        "binary": bytes(range(256)),
        "invalid-utf8": b"\xff\xfe\xfd\x80abc",
        "latin1": "h\u00e9llo w\u00f6rld".encode("latin-1"),
        "nul": b"a\x00b",
        "ansi": "\x1b[31mred\x1b[0m \x1b]0;title\x1b\\ \u009b2J".encode(),
        "bell": b"\x07\x1b]0;title\x07",
        "crlf": b"line1\r\nline2\n",
        "empty": b"",
        "json-unicode": '{"t": "\u00e9\u20ac\U0001F600", "n": 1}'.encode(),
        "megabyte": random.Random(5).randbytes(1 << 20),
    }


def payload_of(record: dict[str, object]) -> bytes:
    """The exact bytes back from a `listen --json` / `replay --to -` line."""
    value, encoding = record["payload"], record["encoding"]
    if encoding == "base64":
        return base64.b64decode(str(value))
    if encoding == "text":
        return str(value).encode("utf-8")
    assert encoding == "json"
    return orjson.dumps(value)  # compared parsed, below


def same_payload(record: dict[str, object], payload: bytes) -> bool:
    if record["encoding"] == "json":
        return record["payload"] == orjson.loads(payload)
    return payload_of(record) == payload


def test_odd_payloads_everywhere(broker: Mosquitto, tmp_path: Path) -> None:
    top = f"odd{uid()}"
    payloads = odd_payloads()
    topic_of = {name: f"devices/{name}/{top}" for name in payloads}  # device id: the name
    path = tmp_path / "odd.parquet"
    count = str(len(payloads))
    topics = f"devices/+/{top}"
    recorder = Proc("record", str(path), "-b", broker.tcp_url, "-t", topics, "--count", count)
    human = Proc("listen", "-b", broker.tcp_url, "-t", topics, "--count", count)
    as_json = Proc("listen", "-b", broker.tcp_url, "-t", topics, "--count", count, "--json")
    recorder.wait_for_stderr("recording mqtt")
    human.wait_for_stderr("listening on")
    as_json.wait_for_stderr("listening on")
    publish(broker.tcp_port, [(topic_of[name], payload) for name, payload in payloads.items()])
    for proc in (recorder, human, as_json):
        assert proc.wait(60) == 0, proc.stderr
        assert "Traceback" not in proc.stderr

    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(lines) == len(payloads)
    for line in lines:
        assert same_payload(line, payloads[line["device_id"]]), line["device_id"]
    text = human.stdout
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text  # escaped, never sent to the terminal
    assert "\\x1b[31mred" in text and "\\x9b2J" in text  # text with escapes: shown, escaped
    assert "Data (binary, 11 bytes): 07 1b 5d" in text and "Data (binary, 1048576 bytes)" in text
    assert "Device: binary" in text and "Data: (empty)" in text

    with open_reader(path) as reader:
        assert {m.topic: m.payload for m in reader} == {topic_of[name]: p for name, p in payloads.items()}
    info = run_cli("info", str(path), "--json", "--duplicates")
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    assert report["payload_bytes"]["max"] == 1 << 20 and report["payload_bytes"]["min"] == 0
    assert report["duplicates"]["count"] == 0
    assert run_cli("info", str(path)).returncode == 0

    copy = tmp_path / "odd.jsonl"
    assert run_cli("convert", str(path), str(copy)).returncode == 0
    dry = run_cli("replay", str(copy), "--to", "-", "--speed", "max")
    assert dry.returncode == 0, dry.stderr
    replayed = [json.loads(line) for line in dry.stdout.splitlines()]
    assert sorted(line["device_id"] for line in replayed) == sorted(payloads)
    for line in replayed:
        assert same_payload(line, payloads[line["device_id"]]), line["device_id"]
    with Collector(broker.tcp_port, topics) as collector:
        result = run_cli("replay", str(copy), "-b", broker.tcp_url, "--speed", "max")
        assert result.returncode == 0, result.stderr
        got = collector.wait_for(len(payloads))
    assert {m.topic: bytes(m.payload) for m in got} == {topic_of[name]: p for name, p in payloads.items()}


# -- a publish that the broker's ACL denies -------------------------------------------------------


def test_acl_denied_publish(broker: Mosquitto, tmp_path: Path) -> None:
    """MQTT 5: the broker answers PUBACK 135 and the commands say so, exit 7. MQTT 3.1.1 has
    no way to say it: mosquitto acknowledges and drops (documented in docs/reliability.md)."""
    device = uid()
    recording = tmp_path / "rec.jsonl"
    with open_writer(recording, metadata=RecordingMetadata(), crash_safe=False) as writer:
        for i in range(3):
            writer.write(Message(f"device/{device}/telemetry", b"%d" % i, 1, False, T0 + i))
    reader_options = ["-b", broker.auth_url, "-u", READER, "--mqtt-version", "5"]
    env = clean_env(MQTT_PASSWORD=READER_PASSWORD)
    with Collector(broker.tcp_port, f"device/{device}/#") as collector:
        simulate = run_cli("simulate", *reader_options, "--device-id", device, "--count", "3", "--interval", "0.02",
                           env=env)
        assert simulate.returncode == 7, simulate.stderr
        assert "3 packets were not delivered (0 dropped, 3 refused: Not authorized 3)" in simulate.stderr
        replay = run_cli("replay", str(recording), *reader_options, "--speed", "max", env=env)
        assert replay.returncode == 7, replay.stderr
        assert "failed 3" in replay.stderr and "refused by the broker: 3 x Not authorized" in replay.stderr
        old = run_cli("simulate", *reader_options[:-1], "3.1.1", "--device-id", device, "--count", "3",
                      "--interval", "0.02", env=env)
        assert old.returncode == 0, old.stderr  # the limitation: acknowledged, and dropped
        time.sleep(0.5)
        assert collector.messages == []
    for result in (simulate, replay, old):
        assert "Traceback" not in result.stderr and READER_PASSWORD not in result.stderr + result.stdout
