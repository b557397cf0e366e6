"""`tesaiot listen` as a user runs it: a real process, a real broker, real signals."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.broker import PASSWORD, TOKEN, USER, Mosquitto
from tests.support.cli import clean_env, cli_command, run_cli, start_cli
from tests.support.clients import publish


def wait_listening(process: subprocess.Popen[str], timeout: float = 15) -> str:
    """Read stderr until the banner says it is subscribed; return what was read."""
    assert process.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        if "listening on" in line:
            return seen
    raise AssertionError(f"listen did not start: {seen!r}")


def finish(process: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_json_output_with_binary_text_and_json(broker: Mosquitto) -> None:
    process = start_cli("listen", "-b", broker.tcp_url, "--json", "--count", "3")
    wait_listening(process)
    publish(broker.tcp_port, [("device/d1/telemetry/DPS368", b'{"data": {"pressure": 1013.25}}'),
                              ("device/d2/telemetry", b"plain text"),
                              ("device/d3/telemetry/raw/adc", b"\x00\xff\xfe")])
    code, out, err = finish(process)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["encoding"] for line in lines] == ["json", "text", "base64"]
    assert lines[0]["payload"] == {"data": {"pressure": 1013.25}}
    assert lines[0]["device_id"] == "d1" and lines[0]["sensor_type"] == "DPS368"
    assert lines[1]["sensor_type"] == "default"
    assert base64.b64decode(lines[2]["payload"]) == b"\x00\xff\xfe" and lines[2]["sensor_type"] == "raw/adc"
    assert all(line["qos"] == 1 and line["retain"] is False and line["time"].endswith("+00:00") for line in lines)
    assert "stopped (count): 3 messages shown" in err


def test_human_output(broker: Mosquitto) -> None:
    process = start_cli("listen", "-b", broker.tcp_url, "--count", "1")
    wait_listening(process)
    publish(broker.tcp_port, [("device/infineon-sensor-01/telemetry", b'{"sensor_type": "DPS368"}')])
    code, out, _ = finish(process)
    assert code == 0
    assert "Device: infineon-sensor-01" in out and "Sensor: DPS368" in out  # the topic has none: the payload's
    assert '"sensor_type": "DPS368"' in out  # pretty-printed JSON
    assert "\x1b[" not in out  # not a terminal: no colour


def test_device_and_sensor_filters(broker: Mosquitto) -> None:
    process = start_cli("listen", "-b", broker.tcp_url, "--json", "--count", "1", "--device", "keep-*",
                        "--sensor", "DPS368")
    wait_listening(process)
    publish(broker.tcp_port, [("device/drop-1/telemetry/DPS368", b"1"), ("device/keep-1/telemetry/other", b"2"),
                              ("device/keep-2/telemetry/DPS368", b"3")])
    code, out, _ = finish(process)
    assert code == 0
    assert [json.loads(line)["device_id"] for line in out.splitlines()] == ["keep-2"]


def test_sensor_filter_matches_our_own_simulator(broker: Mosquitto) -> None:
    """The documented `listen --sensor DPS368` against `simulate`, whose topic has no sensor part."""
    process = start_cli("listen", "-b", broker.tcp_url, "--json", "--count", "3", "--sensor", "DPS368",
                        "--device", "infineon-*")
    wait_listening(process)
    result = run_cli("simulate", "-b", broker.tcp_url, "--count", "3", "--interval", "0.05", "--quiet")
    assert result.returncode == 0, result.stderr
    code, out, err = finish(process)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["topic"], line["sensor_type"]) for line in lines] == [
        ("device/infineon-sensor-01/telemetry", "DPS368")] * 3


def test_timeout_exit_code(broker: Mosquitto) -> None:
    result = run_cli("listen", "-b", broker.tcp_url, "--timeout", "0.5", "--count", "5")
    assert result.returncode == 6
    assert "stopped (timeout)" in result.stderr


def test_timeout_without_count_is_a_normal_end(broker: Mosquitto) -> None:
    """A bounded capture (`listen --timeout S` under `set -e`) did what was asked: exit 0."""
    result = run_cli("listen", "-b", broker.tcp_url, "--timeout", "0.5")
    assert result.returncode == 0, result.stderr
    assert "stopped (timeout)" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(broker: Mosquitto, sig: signal.Signals) -> None:
    process = start_cli("listen", "-b", broker.tcp_url)
    wait_listening(process)
    process.send_signal(sig)
    code, _, err = finish(process)
    assert code == 0
    assert f"stopped ({sig.name})" in err and "Traceback" not in err


def test_token_over_wss_never_shown_in_full(broker: Mosquitto) -> None:
    env = clean_env(MQTT_API_TOKEN=TOKEN, CA_CERT_PATH=str(broker.pki.ca_cert))
    process = start_cli("listen", "-b", broker.wss_url, "--count", "1", "--json", env=env)
    banner = wait_listening(process)
    publish(broker.auth_port, [("device/tok/telemetry", b"{}")], username=USER, password=PASSWORD)
    code, out, err = finish(process)
    assert code == 0
    assert TOKEN[:20] + "..." + TOKEN[-4:] in banner
    assert TOKEN not in out + err + banner


def test_bad_token_is_exit_4_with_hint_and_masked(broker: Mosquitto) -> None:
    bad = TOKEN[:-4] + "zzzz"
    result = run_cli("listen", "-b", broker.auth_url, env=clean_env(MQTT_API_TOKEN=bad))
    assert result.returncode == 4
    assert "authentication failed" in result.stderr and "expired, revoked or wrong" in result.stderr
    assert bad not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_tls_failure_is_one_line_exit_3(broker: Mosquitto) -> None:
    result = run_cli("listen", "-b", broker.tls_url)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "certificate verification failed" in result.stderr


def test_insecure_warns(broker: Mosquitto) -> None:
    result = run_cli("listen", "-b", broker.tls_url, "--insecure", "--timeout", "0.3")
    assert result.returncode == 0
    assert "warning: TLS certificate verification is OFF" in result.stderr


def test_password_from_env_file(broker: Mosquitto, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"MQTT_BROKER_URL={broker.auth_url}\nMQTT_USERNAME={USER}\nMQTT_PASSWORD={PASSWORD}\n")
    env_file.chmod(0o600)
    result = run_cli("listen", "--timeout", "0.3", cwd=tmp_path, env=clean_env(PYTHONPATH=str(Path.cwd())))
    assert result.returncode == 0, result.stderr
    assert f"auth=user {USER}" in result.stderr and PASSWORD not in result.stderr
    assert "other users can read" not in result.stderr
    env_file.chmod(0o644)
    result = run_cli("listen", "--timeout", "0.3", cwd=tmp_path, env=clean_env(PYTHONPATH=str(Path.cwd())))
    assert "other users can read it" in result.stderr


def test_environment_beats_env_file(broker: Mosquitto, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MQTT_BROKER_URL=mqtt://127.0.0.1:1\n")
    env = clean_env(MQTT_BROKER_URL=broker.tcp_url, PYTHONPATH=str(Path.cwd()))
    result = run_cli("listen", "--timeout", "0.3", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_upstream_topic_env_names(broker: Mosquitto) -> None:
    env = clean_env(MQTT_BROKER_URL=broker.tcp_url, MQTT_SUBSCRIBE_TOPIC="device/only-this/telemetry")
    process = start_cli("listen", "--json", "--count", "1", env=env)
    banner = wait_listening(process)
    assert "topics=device/only-this/telemetry" in banner
    publish(broker.tcp_port, [("device/other/telemetry", b"no"), ("device/only-this/telemetry", b"yes")])
    code, out, _ = finish(process)
    assert code == 0 and json.loads(out)["payload"] == "yes"


def test_reconnects_after_broker_restart(own_broker: Mosquitto) -> None:
    process = start_cli("listen", "-b", own_broker.tcp_url, "--json", "--count", "1")
    wait_listening(process)
    own_broker.restart(down_seconds=0.5)
    deadline = time.monotonic() + 20
    delivered = False
    while time.monotonic() < deadline and process.poll() is None:
        publish(own_broker.tcp_port, [("device/back/telemetry", b"after restart")])
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            continue
        delivered = True
    code, out, err = finish(process)
    assert delivered and code == 0
    assert json.loads(out.splitlines()[0])["payload"] == "after restart"
    for word in ("disconnected from", "reconnecting", "reconnected to"):
        assert word in err


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--broker", "ftp://x"], 1, "unknown scheme"),
        (["--broker", "mqtt://h:99999"], 1, "out of range"),
        (["--topic", "a/#/b"], 1, "invalid topic filter"),
        (["--topic", "+x"], 1, "invalid topic filter"),
        (["--count", "0"], 1, "--count"),
        (["--timeout", "-1"], 1, "--timeout"),
        (["--mqtt-version", "4.2"], 1, "MQTT version"),
        (["--no-such-option"], 2, "No such option"),
        (["--broker", "mqtt://127.0.0.1:1"], 3, "connection refused"),
        (["--broker", "wss://mqtt.tesaiot.com", "--token", "abc_wrong_prefix"], 1, "start with 'tesa_mqtt_'"),
        (["--broker", "wss://mqtt.tesaiot.com"], 1, "needs credentials"),
        (["--token", TOKEN, "--topic", "#"], 1, "may only subscribe"),
        (["--template", "{nope}"], 1, "unknown field {nope}"),
        (["--template", "{topic:d}"], 1, "invalid --template"),
        (["--template", "{topic}", "--json"], 1, "exclude each other"),
        (["--payload-only", "--template", "{topic}"], 1, "give one of them"),
        (["--binary", "octal", "-P"], 1, "invalid --binary"),
        (["-F", "%t %z"], 1, "unknown code %z"),
        (["-F", "%t %"], 1, "ends in the middle of a %-code"),
        (["-F", "%t\\q"], 1, "unknown escape \\q"),
        (["-F", "%J"], 1, "%J is not available: the payload unquoted"),
        (["-F", "%C"], 1, "%C is not available: an MQTT 5 property: use --json"),
        (["-F", "{topic} %t"], 1, "mixes {fields} and mosquitto_sub's %-codes (%t)"),
        (["--color", "sometimes"], 1, "invalid --color"),
        (["-R", "--retained-only"], 1, "exclude each other"),
    ],
)
def test_bad_input_one_line_and_exit_code(args: list[str], code: int, text: str) -> None:
    result = run_cli("listen", *args, timeout=30)
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert code == 2 or result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


# -- mosquitto_sub parity: templates, payload only, retained handling, colour, UTC ------------


def test_template_payload_only_and_binary(broker: Mosquitto) -> None:
    topic = f"device/tpl-{time.monotonic_ns()}/telemetry"
    messages = [(topic, b'{"n": 1}'), (topic, b"\x00\xffraw")]
    process = start_cli("listen", "-b", broker.tcp_url, "-t", topic, "--count", "2",
                        "-F", "{topic}\\t{qos}\\t{retain}\\t{bytes}\\t{payload}\\t{time}", "--binary", "base64")
    wait_listening(process)
    publish(broker.tcp_port, messages, qos=1)
    code, out, err = finish(process)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [row[:5] for row in rows] == [[topic, "1", "0", "8", '{"n": 1}'],
                                         [topic, "1", "0", "5", base64.b64encode(b"\x00\xffraw").decode()]]
    assert all(row[5].endswith("+00:00") for row in rows)
    process = start_cli("listen", "-b", broker.tcp_url, "-t", topic, "--count", "2", "-P")
    wait_listening(process)
    publish(broker.tcp_port, messages, qos=1)
    code, out, err = finish(process)
    assert code == 0 and out.splitlines() == ['{"n": 1}', b"\x00\xffraw".hex()], (out, err)


def test_skip_retained_and_retained_only(broker: Mosquitto) -> None:
    base = f"ret-{time.monotonic_ns()}"
    publish(broker.tcp_port, [(f"{base}/a", b"old-a"), (f"{base}/b", b"old-b")], retain=True)
    try:
        result = run_cli("listen", "-b", broker.tcp_url, "-t", f"{base}/#", "--retained-only", "-P",
                         "--timeout", "2")
        assert result.returncode == 0, result.stderr  # no live message came: --timeout ended it, exit 0
        assert sorted(result.stdout.splitlines()) == ["old-a", "old-b"]
        process = start_cli("listen", "-b", broker.tcp_url, "-t", f"{base}/#", "--retained-only", "-P")
        wait_listening(process)
        publish(broker.tcp_port, [(f"{base}/a", b"live")])
        code, out, err = finish(process)
        assert code == 0 and sorted(out.splitlines()) == ["old-a", "old-b"], err
        assert "stopped (end of the retained messages): 2 messages shown" in err
        process = start_cli("listen", "-b", broker.tcp_url, "-t", f"{base}/#", "-R", "-P", "--count", "1")
        wait_listening(process)
        publish(broker.tcp_port, [(f"{base}/b", b"live-b")])
        code, out, err = finish(process)
        assert code == 0 and out.splitlines() == ["live-b"], err
        assert "1 message shown" in err
    finally:
        publish(broker.tcp_port, [(f"{base}/a", b""), (f"{base}/b", b"")], retain=True)


@pytest.mark.parametrize(("color", "painted"), [("always", True), ("never", False), ("auto", False)])
def test_color_option_and_utc_shown(broker: Mosquitto, color: str, painted: bool) -> None:
    topic = f"device/col-{time.monotonic_ns()}/telemetry"
    process = start_cli("listen", "-b", broker.tcp_url, "-t", topic, "--count", "1", "--color", color)
    wait_listening(process)
    publish(broker.tcp_port, [(topic, b'{"n": 1}')])
    code, out, err = finish(process)
    assert code == 0, err
    assert ("\x1b[" in out) is painted  # auto: stdout is a pipe here, so no colour
    assert " UTC]" in out  # the receive time says which clock it is


def test_tls_settings_from_the_environment_on_a_plain_url_are_named_not_ignored(broker: Mosquitto) -> None:
    env = clean_env(CA_CERT_PATH=str(broker.pki.ca_cert), MQTT_PASSWORD="pw-without-user")
    result = run_cli("listen", "-b", broker.tcp_url, "--timeout", "0.3", env=env)
    assert result.returncode == 0, result.stderr
    assert f"warning: CA_CERT_PATH/MQTT_CA_CERT is set but {broker.tcp_url} is not TLS: it is not used" in result.stderr
    assert "warning: MQTT_PASSWORD is set but no username is: the password is not used" in result.stderr
    assert "pw-without-user" not in result.stderr


def test_client_certificate_problems_are_named(broker: Mosquitto, tmp_path: Path) -> None:
    """16.9: '[SSL] PEM lib (_ssl.c:3926)' said nothing; now the file and the problem are named."""
    pki = broker.pki
    common = ("listen", "-b", broker.mtls_url, "--ca-file", str(pki.ca_cert), "--timeout", "0.3")
    mismatch = run_cli(*common, "--cert-file", str(pki.client_cert), "--key-file", str(pki.server_key))
    assert mismatch.returncode == 1, mismatch.stderr
    assert f"the client key {pki.server_key} does not belong to the certificate {pki.client_cert}" in mismatch.stderr
    no_key = run_cli(*common, "--cert-file", str(pki.client_cert))
    assert no_key.returncode == 1 and "holds no private key: give the client's key with --key-file" in no_key.stderr
    combined = tmp_path / "both.pem"
    combined.write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    together = run_cli(*common, "--cert-file", str(combined))  # a PEM holding both is fine
    assert together.returncode == 0, together.stderr
    wrong_key = run_cli(*common, "--cert-file", str(pki.client_cert), "--key-file", str(pki.ca_cert))
    assert wrong_key.returncode == 1 and "holds no PEM private key" in wrong_key.stderr


# mosquitto_sub -F's own codes, compared with mosquitto_sub on the same messages: every code
# listen takes, field widths and precisions, escapes, text with quotes, control characters
# and UTF-8, a JSON payload, an empty one, retained and live messages.
MOSQUITTO_FORMAT = "%t|%p|%q|%r|%l|%x|%X|%10t|%-10t|%5.3t|%05l|%-5l|%3p|%-3p|%.2t|%%|\\\\|\\t|\\e[0m|%j"
TIME_FORMAT = "%I|%U|@Y-@m-@dT@H|@N|@@"


def _capture(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lines_so_far(process: subprocess.Popen[bytes], want: int, got: list[bytes], timeout: float = 15) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        got.append(line)
    assert len(got) >= want, got


def test_mosquitto_sub_format_codes_as_mosquitto_sub_prints_them(broker: Mosquitto) -> None:
    import re

    base = f"mosq-{time.monotonic_ns()}"
    retained = [(f"{base}/a", b"hello world"), (f"{base}/b", 'a"b\\c\nd\te\x01f/\u00e9\u20ac\U0001F600'.encode()),
                (f"{base}/\u00e9 b", b'{"v": 1}')]
    live = [(f"{base}/c", b""), (f"{base}/d", b"live")]
    publish(broker.tcp_port, retained, qos=1, retain=True)
    env = clean_env(TZ="Asia/Bangkok")  # %I, %j and @ codes are in the local time zone, as mosquitto_sub's
    count = str(len(retained) + len(live))
    # (template, lines the retained messages take: one payload holds a line break)
    plan = [(MOSQUITTO_FORMAT, len(retained) + 1), (TIME_FORMAT, len(retained))]
    processes: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for template, lines in plan:
            processes.append((_capture(["mosquitto_sub", "-p", str(broker.tcp_port), "-t", f"{base}/#", "-q", "0",
                                        "-C", count, "-F", template], env), lines))
            processes.append((_capture(cli_command("listen", "-b", broker.tcp_url, "-t", f"{base}/#", "-q", "0",
                                                   "-n", count, "--quiet", "-F", template), env), lines))
        early: list[list[bytes]] = []
        for process, lines in processes:  # all four have subscribed once they show the retained messages
            early.append([])
            _lines_so_far(process, lines, early[-1])
        publish(broker.tcp_port, live, qos=1)
        outputs = []
        for (process, _), start in zip(processes, early, strict=True):
            out, err = process.communicate(timeout=20)
            assert process.returncode == 0, err
            outputs.append(b"".join(start) + out)
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    codes_theirs, codes_ours, times_theirs, times_ours = outputs
    stamp = re.compile(rb'"tst":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\+0700"')
    assert len(stamp.findall(codes_ours)) == len(stamp.findall(codes_theirs)) == 5
    assert stamp.sub(b"TST", codes_ours) == stamp.sub(b"TST", codes_theirs)
    assert codes_ours.count(b"\n") == 6 and b'"payloadlen":0,"payload":null}' in codes_ours
    shape = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0700\|\d{10}\.\d{9}\|\d{4}-\d\d-\d\dT\d\d\|\d{9}\|@")
    for output in (times_theirs, times_ours):
        lines = output.splitlines()
        assert len(lines) == 5 and all(shape.fullmatch(line) for line in lines), output
    for line in times_ours.splitlines():  # the local time (+07:00) and the Unix time of one line agree
        iso, unix = line.split(b"|")[:2]
        assert iso == time.strftime("%Y-%m-%dT%H:%M:%S+0700", time.gmtime(int(unix.split(b".")[0]) + 7 * 3600)).encode()


def test_packet_identifiers_as_mosquitto_sub_prints_them(broker: Mosquitto) -> None:
    """%m (with widths) and %j's "mid" at QoS 1 and 2: the packet identifier the broker gave
    each message on this connection, compared with mosquitto_sub's on the same messages (the
    broker numbers each new subscriber's packets the same way); 0 and no "mid" at QoS 0."""
    import re

    base = f"mid-{time.monotonic_ns()}"
    template = "%m|%5m|%-5m|%05m|%q|%j"
    publish(broker.tcp_port, [(f"{base}/ready", b"retained")], qos=1, retain=True)
    messages = [(f"{base}/q1", f"one {n}".encode()) for n in range(3)]
    count = str(len(messages) + 2)  # the retained one, three at QoS 1, one at QoS 0
    env = clean_env()
    processes = []
    try:
        for qos in ("1", "2"):
            processes.append(_capture(["mosquitto_sub", "-p", str(broker.tcp_port), "-t", f"{base}/#", "-q", qos,
                                       "-C", count, "-F", template], env))
            processes.append(_capture(cli_command("listen", "-b", broker.tcp_url, "--quiet", "-t", f"{base}/#",
                                                  "-q", qos, "-n", count, "-F", template), env))
        early: list[list[bytes]] = []
        for process in processes:  # each has subscribed once it shows the retained message
            early.append([])
            _lines_so_far(process, 1, early[-1])
        publish(broker.tcp_port, messages, qos=1)
        publish(broker.tcp_port, [(f"{base}/q0", b"zero")], qos=0)
        outputs = []
        for process, start in zip(processes, early, strict=True):
            out, err = process.communicate(timeout=20)
            assert process.returncode == 0, err
            outputs.append(re.sub(rb'"tst":"[^"]+"', b"TST", b"".join(start) + out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    theirs_1, ours_1, theirs_2, ours_2 = outputs
    assert ours_1 == theirs_1 and ours_2 == theirs_2, (ours_1, theirs_1)
    first = ours_1.splitlines()[0].split(b"|")
    assert int(first[0]) > 0 and len(first[1]) == 5 and first[3] == first[0].rjust(5, b"0")
    assert ours_1.splitlines()[-1].startswith(b"0|    0|0    |00000|0|") and b'"mid"' not in ours_1.splitlines()[-1]


def test_mosquitto_format_on_binary_payloads() -> None:
    """%p is the payload's bytes as they are; %j writes a payload that is not UTF-8 text as
    null with its bytes in payload_base64 (mosquitto_sub writes them raw: not JSON)."""
    from tesaiot_cli.message import Message
    from tesaiot_cli.output.render import compile_template

    message = Message("t/b", b"\xff\x00ab", 1, True, 1_796_637_600_123_456_789, None, 7)
    assert compile_template("%p|%x|%X|%l|%r|%q|%m|%U")(message) == b"\xff\x00ab|ff006162|FF006162|4|1|1|7|" \
        b"1796637600.123456789"
    record = json.loads(compile_template("%j")(message))
    assert record["payload"] is None and base64.b64decode(record["payload_base64"]) == b"\xff\x00ab"
    assert record["payloadlen"] == 4 and record["mid"] == 7
    assert "mid" not in json.loads(compile_template("%j")(message._replace(qos=0)))  # as mosquitto_sub: QoS 1, 2
    assert compile_template("%p", terminal=True)(message) == b"\\xff\\x00ab"
    # our own {field} templates are as before
    assert compile_template("{topic}\\t{bytes} 100%")(message) == b"t/b\t4 100%"
