"""Secrets stay secret: full sessions of every command with a known password and a known
token, given every way the CLI accepts them (flag, environment, URL user info, .env), and
then every byte written to stdout, stderr and disk is searched for them.

Also: a readable .env holding secrets warns; an internal error (a bug) shows neither a
traceback nor a local variable. TLS verification by default and the --insecure warning
are tested in tests/test_session.py (test_tls_is_verified_by_default,
test_insecure_skips_verification) and tests/test_listen_cli.py (test_insecure_warns).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tesaiot_cli.cli import all_commands, app
from tests.support.broker import PASSWORD, TOKEN, USER, Mosquitto
from tests.support.cli import Proc, clean_env, run_cli
from tests.support.recordings import wait_recorded

SECRETS = (PASSWORD, TOKEN)
runner = CliRunner()


def write_env(directory: Path, text: str, *, mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".env"
    path.write_text(text)
    path.chmod(mode)
    return path


def assert_no_secret(where: str, data: str | bytes) -> None:
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    for secret in SECRETS:
        assert secret.encode() not in blob, f"{where} holds a secret"


def test_no_secret_in_any_output_or_file(broker: Mosquitto, tmp_path: Path) -> None:
    device = f"sec{uuid.uuid4().hex[:8]}x"
    topic = f"device/{device}/telemetry"
    out = tmp_path / "out"
    out.mkdir()
    url_with_password = f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{broker.auth_port}"
    password_env = write_env(tmp_path / "password-env", f"MQTT_BROKER_URL={broker.auth_url}\nMQTT_USERNAME={USER}\n"
                                                         f"MQTT_PASSWORD={PASSWORD}\n")
    token_env = write_env(tmp_path / "token-env", f"MQTT_BROKER_URL={broker.auth_url}\nMQTT_API_TOKEN={TOKEN}\n")
    env_password = clean_env(MQTT_USERNAME=USER, MQTT_PASSWORD=PASSWORD)
    env_token = clean_env(MQTT_API_TOKEN=TOKEN)
    outputs: dict[str, tuple[str, str]] = {}

    # Listeners and recorders first, each given its secret another way.
    background = {
        "record/password-env": Proc("record", str(out / "env.parquet"), "-b", broker.auth_url, "-t", topic,
                                    "--count", "12", env=env_password),
        "record/password-dotenv": Proc("record", str(out / "dotenv.jsonl"), "-t", topic, "--count", "12",
                                       "--env-file", str(password_env)),
        "record/token-dotenv": Proc("record", str(out / "token.parquet"), "--count", "12",
                                    "--env-file", str(token_env)),  # default filter device/+/telemetry/#
        "record/token-flag": Proc("record", str(out / "killed.parquet"), "-b", broker.auth_url, "--token", TOKEN,
                                  "-t", topic),
        "listen/password-url": Proc("listen", "-b", url_with_password, "-t", topic, "--json", "--count", "2"),
        "listen/token-env": Proc("listen", "-b", broker.auth_url, "-t", topic, "--count", "2", env=env_token),
    }
    for name, proc in background.items():
        proc.wait_for_stderr("recording mqtt" if name.startswith("record") else "listening on")

    # Publishers: a token is refused up front, with a message that does not show it.
    runs = {
        "simulate/password-flag": run_cli("simulate", "-b", broker.auth_url, "-u", USER, "--password", PASSWORD,
                                          "--device-id", device, "--count", "3", "--interval", "0.01",
                                          "--record", str(out / "truth.jsonl")),
        "simulate/password-url": run_cli("simulate", "-b", url_with_password, "--device-id", device, "--count", "3",
                                         "--interval", "0.01", "--record", str(out / "truth.parquet")),
        "simulate/token-env": run_cli("simulate", "-b", broker.auth_url, "--count", "1", env=env_token),
        "simulate/password-env": run_cli("simulate", "--device-id", device, "--count", "0", "-b", broker.auth_url,
                                         env=env_password),  # a bad option: the error must not show it either
    }
    runs["replay/password-dotenv"] = run_cli("replay", str(out / "truth.jsonl"), "--speed", "max",
                                             "--env-file", str(password_env))
    runs["replay/password-env"] = run_cli("replay", str(out / "truth.parquet"), "--speed", "max", "-b",
                                          broker.auth_url, env=env_password)
    runs["replay/token-flag"] = run_cli("replay", str(out / "truth.jsonl"), "-b", broker.auth_url, "--token", TOKEN)
    runs["replay/token-dotenv"] = run_cli("replay", str(out / "truth.jsonl"), "--env-file", str(token_env))
    for name, result in runs.items():
        assert "Traceback" not in result.stderr, name
        outputs[name] = (result.stdout, result.stderr)
    for name in ("simulate/password-flag", "simulate/password-url", "replay/password-dotenv", "replay/password-env"):
        assert runs[name].returncode == 0, (name, runs[name].stderr)
    for name in ("simulate/token-env", "replay/token-flag", "replay/token-dotenv"):
        assert runs[name].returncode == 1 and "may only subscribe" in runs[name].stderr, name

    # The killed recorder leaves its .partial/ directory: searched as it is, and once sealed.
    assert wait_recorded(out / "killed.parquet", 12) >= 12
    background["record/token-flag"].process.kill()
    for name, proc in background.items():
        code = proc.wait(60)
        assert code == (-signal.SIGKILL if name == "record/token-flag" else 0), (name, proc.stderr)
        outputs[name] = (proc.stdout, proc.stderr)
    partial_files = {p: p.read_bytes() for p in (out / "killed.parquet.partial").iterdir()}
    assert partial_files
    for path, data in partial_files.items():
        assert_no_secret(str(path), data)
    recover = run_cli("recover", str(out / "killed.parquet"))
    assert recover.returncode == 0, recover.stderr
    outputs["recover"] = (recover.stdout, recover.stderr)

    # Reading what was written: nothing to hide there either.
    recordings = sorted(p for p in out.iterdir() if p.suffix in (".parquet", ".jsonl"))
    assert len(recordings) == 6
    for path in recordings:  # in-process: the same commands and outputs, without 18 interpreter starts
        for args in (["info", str(path)], ["info", str(path), "--json", "--duplicates"],
                     ["convert", str(path), str(tmp_path / f"copy-{path.stem}{path.suffix}.jsonl")]):
            result = runner.invoke(app, args, env={"ARROW_DEFAULT_MEMORY_POOL": "system"})
            assert result.exit_code == 0 and result.exception is None, result.stderr
            outputs[" ".join(args)] = (result.stdout, result.stderr)

    for name, (stdout, stderr) in outputs.items():
        assert_no_secret(f"{name} stdout", stdout)
        assert_no_secret(f"{name} stderr", stderr)
    searched = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != ".env":
            assert_no_secret(str(path), path.read_bytes())
            searched += 1
    assert searched >= 8
    # The secrets were really used: messages went through every authenticated session.
    assert '"device_id":"' + device in outputs["listen/password-url"][0]
    assert "recorded 12 messages" in outputs["record/token-dotenv"][1]


def test_help_texts_hold_no_secret() -> None:
    env = {"MQTT_PASSWORD": PASSWORD, "MQTT_API_TOKEN": TOKEN, "MQTT_USERNAME": USER}
    names = sorted(all_commands())
    assert {"listen", "record", "simulate", "replay", "info", "convert", "recover"} <= set(names)
    for args in [["--help"], *[[name, "--help"] for name in names]]:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, args
        assert_no_secret(f"{args} help", result.output)


@pytest.mark.parametrize("command", ["record", "listen", "simulate"])
def test_env_file_readable_by_others_warns(broker: Mosquitto, tmp_path: Path, command: str) -> None:
    dotenv = write_env(tmp_path / "d", f"MQTT_BROKER_URL={broker.auth_url}\nMQTT_USERNAME={USER}\n"
                                       f"MQTT_PASSWORD={PASSWORD}\n", mode=0o644)
    args = {"record": ["record", str(tmp_path / "r.jsonl"), "-t", "quiet/none", "--duration", "0.2"],
            "listen": ["listen", "-t", "quiet/none", "--timeout", "0.2"],
            "simulate": ["simulate", "--count", "1", "--topic", "quiet/none"]}[command]
    exposed = run_cli(*args, cwd=dotenv.parent)
    assert exposed.returncode == 0, exposed.stderr
    warning = f"warning: {dotenv.name} holds secrets and other users can read it: run 'chmod 600"
    assert exposed.stderr.count(warning) == 1, exposed.stderr  # once (it was printed twice)
    assert_no_secret("stderr", exposed.stderr)
    dotenv.chmod(0o600)
    (tmp_path / "r.jsonl").unlink(missing_ok=True)
    private = run_cli(*args, cwd=dotenv.parent)
    assert private.returncode == 0 and "other users can read it" not in private.stderr, private.stderr


# -- an internal error (a bug) never shows a traceback, a local variable or a secret ------------

SECRET_LOCAL = "pw-in-a-local-variable-1234"


def _failing_resolve(original: object) -> object:
    def resolve(*args: object, **kwargs: object) -> object:
        settings = original(*args, **kwargs)  # type: ignore[operator]
        secrets_in_locals = [settings.password.reveal(), SECRET_LOCAL]  # in the failing frame
        raise RuntimeError(f"simulated bug with {settings!r} ({len(secrets_in_locals)} secrets in locals)")

    return resolve


@pytest.mark.parametrize("command", ["listen", "record", "simulate", "replay"])
def test_internal_error_shows_no_traceback_and_no_secret(command: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module = importlib.import_module(f"tesaiot_cli.commands.{command}")
    monkeypatch.setattr(module, "resolve_settings", _failing_resolve(module.resolve_settings))
    recording = tmp_path / "rec.jsonl"
    recording.write_text('{"time": 1, "topic": "t", "payload": "x"}\n')
    args = {"listen": ["listen"], "record": ["record", str(tmp_path / "out.parquet")],
            "simulate": ["simulate", "--count", "1"], "replay": ["replay", str(recording)]}[command]
    env = {"MQTT_USERNAME": USER, "MQTT_PASSWORD": PASSWORD, "MQTT_BROKER_URL": "mqtt://127.0.0.1:1",
           "ARROW_DEFAULT_MEMORY_POOL": "system"}
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 70, (result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tesaiot: internal error: RuntimeError: simulated bug")
    assert "(please report this)" in lines[0] and "Traceback" not in result.output
    assert "simulated bug with ConnectionSettings(" in lines[0]  # its repr leaves the secrets out
    assert_no_secret("output", result.output)
    assert SECRET_LOCAL not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.jsonl"]  # nothing written


def test_internal_error_in_a_real_process() -> None:
    """The same through the real entry point and a real stderr."""
    code = (
        "import sys\n"
        "from tesaiot_cli.commands import listen\n"
        "def broken(*args, **kwargs):\n"
        f"    secret = {PASSWORD!r}\n"
        "    raise ValueError('a bug')\n"
        "listen.resolve_settings = broken\n"
        "from tesaiot_cli.cli import main\n"
        "sys.argv = ['tesaiot', 'listen']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=clean_env(MQTT_PASSWORD=PASSWORD))
    assert result.returncode == 70
    assert result.stderr == "tesaiot: internal error: ValueError: a bug (please report this)\n"
    assert_no_secret("stdout", result.stdout)


def test_secrets_are_not_in_the_process_environment_of_children(broker: Mosquitto, tmp_path: Path) -> None:
    """A .env is read without changing the environment: nothing leaks to child processes
    (or to /proc/PID/environ) that the user did not export."""
    dotenv = write_env(tmp_path, f"MQTT_BROKER_URL={broker.auth_url}\nMQTT_USERNAME={USER}\nMQTT_PASSWORD={PASSWORD}\n")
    proc = Proc("listen", "-t", "quiet/none", "--env-file", str(dotenv))
    try:
        proc.wait_for_stderr("listening on")
        environ = Path(f"/proc/{proc.process.pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{proc.process.pid}/cmdline").read_bytes()
    finally:
        proc.stop()
    assert_no_secret("environ", environ)
    assert_no_secret("cmdline", cmdline)
