"""The recorders and subscribers compared in the record, storage and memory sections.

Each tool is started with a unique client id, so the harness can see in the broker's log
when its subscription is in place; then it is "done" either when it exits by itself after
the expected count (tesaiot record --count, paho_sub --count, mosquitto_sub -C) or, for
mqtt-recorder, which has no count option, when its CSV (line-buffered) holds every row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.common import BENCH_DIR, PYTHON, Broker, LineCounter, count_lines, stop_process, tesaiot_help
from benchlib.data import count_recording


@dataclass
class Running:
    """One started subscriber: its process, output, and when it was done (CLOCK_MONOTONIC ns)."""

    tool: SubscriberTool
    process: subprocess.Popen[bytes]
    output: Path
    count: int
    done_ns: int | None = None
    received: int | None = None
    note: str = ""
    counter: LineCounter | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def poll_done(self) -> bool:
        """Whether it has received everything; records the time it first saw so."""
        if self.done_ns is not None:
            return True
        if self.counter is not None:
            finished = self.counter.update() >= self.count
        else:
            finished = self.process.poll() is not None
        if finished:
            self.done_ns = time.monotonic_ns()
        return finished

    def finish(self) -> int:
        """Stop it if it still runs (SIGINT: recorders write out and close), then count what it got."""
        code = stop_process(self.process)
        self.received = self.tool.received(self)
        if code not in (0, -2, 130) and not self.note:
            self.note = f"exit code {code}"
        if self.note:
            said = _last_line(self.output.with_name(self.output.name + ".stderr"))
            if said:
                exit_said = "" if self.note == f"exit code {code}" else f"exit code {code}, "
                self.note += f"; {exit_said}its stderr ended: {said}"
        return self.received


def _last_line(path: Path) -> str:
    """The last non-empty line of a tool's stderr (for a failed trial's note), "" when none."""
    try:
        lines = [line for line in path.read_bytes()[-4096:].decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class SubscriberTool:
    """Base class: ``key``, ``label``, availability and how to start and count."""

    key = ""
    label = ""
    suffix = ".out"
    opt_in = False  # run only when --tools names it

    def unavailable(self) -> str | None:
        """None when the tool can run here, else why not."""
        return None

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        raise NotImplementedError

    def start(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, workdir: Path,
              memory: bool = False) -> Running:
        output = workdir / f"{client_id}{self.suffix}"
        argv = self.argv(broker, topic=topic, qos=qos, count=count, client_id=client_id, output=output)
        stdout = self.stdout_target(output)
        env = {**os.environ, **self.env()} if self.env() else None
        stderr = open(output.with_name(output.name + ".stderr"), "wb")  # noqa: SIM115 - the child's
        try:
            process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=workdir, env=env)
        finally:
            stderr.close()
            if stdout not in (subprocess.DEVNULL, subprocess.PIPE) and hasattr(stdout, "close"):
                stdout.close()
        running = Running(self, process, output, count)
        if self.counts_by_file():
            running.counter = LineCounter(output)
        return running

    def stdout_target(self, output: Path) -> Any:
        return subprocess.DEVNULL

    def env(self) -> dict[str, str]:
        """Extra environment variables for the tool."""
        return {}

    def counts_by_file(self) -> bool:
        return False

    def received(self, running: Running) -> int:
        raise NotImplementedError


class TesaiotRecord(SubscriberTool):
    """``tesaiot record FILE --count N`` to Parquet or JSONL."""

    def __init__(self, fmt: str, *, public_path: bool = False) -> None:
        self.fmt = fmt
        self.public_path = public_path
        self.key = f"tesaiot-{fmt}" + ("-public" if public_path else "")
        self.label = f"tesaiot record ({'Parquet' if fmt == 'parquet' else 'JSONL'})" + (
            ", paho public path" if public_path else "")
        self.suffix = f".{fmt}"
        self._help: str | None = None

    def env(self) -> dict[str, str]:
        return {"TESAIOT_PAHO_PATH": "public"} if self.public_path else {}

    def help_text(self) -> str:
        if self._help is None:
            self._help = tesaiot_help("record")
        return self._help

    def unavailable(self) -> str | None:
        if not shutil.which("tesaiot"):
            return "tesaiot is not on PATH"
        if not self.help_text():
            return "tesaiot record not available"
        return None

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        text = self.help_text()
        argv = [shutil.which("tesaiot") or "tesaiot", "record", str(output), "--count", str(count),
                "--qos", str(qos), "--topic", topic, "--broker", broker.url, "--client-id", client_id]
        if "--quiet" in text:
            argv.append("--quiet")
        return argv

    def received(self, running: Running) -> int:
        found = count_recording(running.output)
        if found < 0:
            running.note = running.note or "output unreadable"
            return 0
        return found


class TesaiotRecordS3(TesaiotRecord):
    """``tesaiot record s3://bench/<client>.parquet --count N`` against moto's S3 server on
    loopback (``moto_server``, from the test extra), started on first use and stopped at exit:
    the upload runs beside the writer, so this should hold the local Parquet rates."""

    BUCKET = "bench"
    opt_in = True

    def __init__(self) -> None:
        super().__init__("parquet")
        self.key = "tesaiot-parquet-s3"
        self.label = "tesaiot record (Parquet to s3://, moto on loopback)"
        self._moto: subprocess.Popen[bytes] | None = None
        self._port = 0

    def unavailable(self) -> str | None:
        if not Path(PYTHON).with_name("moto_server").exists():
            return "moto_server not found (pip install 'moto[server]')"
        return super().unavailable()

    def _endpoint(self) -> str:
        if self._moto is None:
            import atexit
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self._port = sock.getsockname()[1]
            self._moto = subprocess.Popen([str(Path(PYTHON).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                           str(self._port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            atexit.register(stop_process, self._moto)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self._port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            self._filesystem().create_dir(self.BUCKET)
        return f"http://127.0.0.1:{self._port}"

    def _filesystem(self) -> Any:
        from pyarrow import fs

        return fs.S3FileSystem(access_key="bench", secret_key="bench", region="us-east-1", scheme="http",
                               endpoint_override=f"http://127.0.0.1:{self._port}", allow_bucket_creation=True)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self._endpoint(), "AWS_EC2_METADATA_DISABLED": "true"}

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        argv = super().argv(broker, topic=topic, qos=qos, count=count, client_id=client_id, output=output)
        argv[2] = f"s3://{self.BUCKET}/{output.name}"
        return argv

    def received(self, running: Running) -> int:
        import pyarrow.parquet as pq

        try:
            return int(pq.read_metadata(f"{self.BUCKET}/{running.output.name}",
                                        filesystem=self._filesystem()).num_rows)
        except (OSError, ValueError) as exc:
            running.note = running.note or f"output unreadable: {exc}"
            return 0


class PahoSubscriber(SubscriberTool):
    key = "paho"
    label = "raw paho subscriber"
    suffix = ".json"

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        return [PYTHON, str(BENCH_DIR / "paho_sub.py"), "--port", str(broker.port), "--topic", topic,
                "--qos", str(qos), "--count", str(count), "--client-id", client_id]

    def stdout_target(self, output: Path) -> Any:
        return open(output, "wb")

    def received(self, running: Running) -> int:
        try:
            return int(json.loads(running.output.read_text().strip().splitlines()[-1])["received"])
        except (ValueError, IndexError, KeyError, OSError):
            running.note = running.note or "no count printed"
            return 0


class MosquittoSub(SubscriberTool):
    key = "mosquitto_sub"
    label = "mosquitto_sub (C)"
    suffix = ".lens"

    def unavailable(self) -> str | None:
        return None if shutil.which("mosquitto_sub") else "mosquitto_sub not found"

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        # -F %l: one short line (the payload length) per message, so the count is exact.
        return ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", str(qos),
                "-C", str(count), "-i", client_id, "-F", "%l"]

    def stdout_target(self, output: Path) -> Any:
        return open(output, "wb")

    def received(self, running: Running) -> int:
        return count_lines(running.output)


class MqttRecorder(SubscriberTool):
    key = "mqtt-recorder"
    label = "mqtt-recorder 1.4.0 (CSV)"
    suffix = ".csv"

    def __init__(self) -> None:
        self._available: bool | None = None

    def unavailable(self) -> str | None:
        if self._available is None:
            from benchlib.common import has_module

            self._available = has_module("mqtt_recorder")
        return None if self._available else "mqtt-recorder not installed (pip install -e '.[bench]')"

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        return [PYTHON, "-m", "mqtt_recorder", "--host", "127.0.0.1", "--port", str(broker.port), "--mode", "record",
                "--file", str(output), "--qos", str(qos), "--topic", topic, "--client_id", client_id]

    def counts_by_file(self) -> bool:
        return True

    def received(self, running: Running) -> int:
        return count_lines(running.output)


class TesaiotDetect(SubscriberTool):
    """``tesaiot detect --count N``: the live reference detector (it publishes its alerts too).
    Its count is the readings analysed, from its summary line; an alert not delivered (exit
    code 7) is a note, and the trial fails."""

    key = "tesaiot-detect"
    label = "tesaiot detect (live)"
    suffix = ".log"

    def unavailable(self) -> str | None:
        if not shutil.which("tesaiot"):
            return "tesaiot is not on PATH"
        return None if "--alert-topic" in tesaiot_help("detect") else "tesaiot detect not available"

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        return [shutil.which("tesaiot") or "tesaiot", "detect", "--count", str(count), "--qos", str(qos),
                "--topic", topic, "--broker", broker.url, "--client-id", client_id]

    def start(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, workdir: Path,
              memory: bool = False) -> Running:
        output = workdir / f"{client_id}{self.suffix}"
        argv = self.argv(broker, topic=topic, qos=qos, count=count, client_id=client_id, output=output)
        with open(output, "wb") as log:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, cwd=workdir)
        return Running(self, process, output, count)

    def received(self, running: Running) -> int:
        try:
            text = running.output.read_text()
        except OSError:
            text = ""
        for line in text.splitlines():
            if "readings from" in line and "analysed" in line:
                if "alerts were not delivered" in text:
                    running.note = running.note or "alerts not delivered"
                    return 0
                return int(line.split(" readings from")[0].rsplit(" ", 1)[1])
        running.note = running.note or "no summary"
        return 0


def all_tools() -> list[SubscriberTool]:
    return [TesaiotRecord("parquet"), TesaiotRecord("jsonl"), TesaiotRecord("parquet", public_path=True),
            TesaiotRecordS3(), TesaiotDetect(), PahoSubscriber(), MosquittoSub(), MqttRecorder()]
