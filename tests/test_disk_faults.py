"""Disk faults while recording: a real full disk (a 2 MiB tmpfs when root, else a file
size limit), a disk that is full from the start, a slow disk, and a device in the way.

The guarantees are written down in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tesaiot_cli.cliutil import EXIT_RECORDING
from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tesaiot_cli.recording.formats.jsonl import JsonlWriter
from tests.support.broker import Mosquitto
from tests.support.cli import Proc, clean_env, error_lines, run_cli
from tests.support.clients import publish
from tests.support.fakes import uid
from tests.support.recordings import recorded

T0 = 1_790_000_000_000_000_000

# -- disk full -----------------------------------------------------------------------------


class SmallDisk:
    """A directory that fills up: a real 2 MiB tmpfs when we may mount one (root), else a
    file size limit (RLIMIT_FSIZE) on the recording process, which fails writes the same way."""

    def __init__(self, directory: Path, *, tmpfs: bool) -> None:
        self.directory = directory
        self.tmpfs = tmpfs
        self.reason = "the disk is full" if tmpfs else "a file size limit was reached"

    def preexec(self, *, full: bool = False) -> object:
        if self.tmpfs:
            return None
        size = 0 if full else 2 * 1024 * 1024

        def limit() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        return limit

    def fill(self) -> None:
        """Take every free byte (tmpfs); with a file size limit, ``preexec(full=True)`` does it."""
        if not self.tmpfs:
            return
        with contextlib.suppress(OSError), open(self.directory / "ballast", "wb") as handle:
            for _ in range(4096):
                handle.write(b"\0" * 4096)
                handle.flush()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    directory = tmp_path / "disk"
    directory.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(directory)], capture_output=True,
    ).returncode == 0
    try:
        yield SmallDisk(directory, tmpfs=mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30)


def start_limited(disk: SmallDisk, *args: str, full: bool = False) -> Proc:
    """Like :class:`Proc`, with the disk's file size limit when it has one."""
    preexec = disk.preexec(full=full)
    if preexec is None:
        return Proc(*args)
    from tests.support.cli import cli_command

    proc = Proc.__new__(Proc)
    proc.process = subprocess.Popen(cli_command(*args), env=clean_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, preexec_fn=preexec)  # type: ignore[arg-type]
    proc.out, proc.err = [], []
    proc._threads = [threading.Thread(target=Proc._drain, args=(stream, sink), daemon=True)
                     for stream, sink in ((proc.process.stdout, proc.out), (proc.process.stderr, proc.err))]
    for thread in proc._threads:
        thread.start()
    return proc


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_disk_full_while_recording_exit_5_and_everything_before_is_readable(
        broker: Mosquitto, small_disk: SmallDisk, tmp_path: Path, fmt: str) -> None:
    topic = f"full/{uid()}"
    path = small_disk.directory / f"rec.{fmt}"
    recorder = start_limited(small_disk, "record", str(path), "-b", broker.tcp_url, "-t", topic, "--qos", "1")
    recorder.wait_for_stderr("recording mqtt")
    rng = random.Random(11)
    sent: list[bytes] = []
    for _ in range(300):  # 6 MB of incompressible payload into 2 MiB: bounded, and ends much sooner
        if recorder.process.poll() is not None:
            break
        batch = [rng.randbytes(20_000) for _ in range(5)]
        publish(broker.tcp_port, [(topic, payload) for payload in batch])
        sent.extend(batch)
        time.sleep(0.02)
    assert recorder.wait(30) == EXIT_RECORDING, recorder.stderr
    errors = error_lines(recorder.stderr)
    assert len(errors) == 1 and small_disk.reason in errors[0], recorder.stderr
    assert "what was recorded before is in" in errors[0]

    with open_reader(path) as reader:  # unsealed, readable as it is
        kept = [m.payload for m in reader]
    assert kept and kept == sent[:len(kept)]  # byte-exact, in order, nothing damaged
    info = run_cli("info", str(path), "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["messages"] == len(kept), info.stderr

    if fmt == "parquet":
        assert "tesaiot recover" in errors[0]
        if small_disk.tmpfs:  # sealing in place needs room: a clean error, the leftover intact
            result = run_cli("recover", str(path))
            assert result.returncode == EXIT_RECORDING and len(error_lines(result.stderr)) == 1
            assert small_disk.reason in result.stderr
            assert [n for n in os.listdir(small_disk.directory) if n.endswith(".tmp")] == []
        sealed = tmp_path / "sealed.parquet"
        result = run_cli("recover", str(path), "--output", str(sealed))
        assert result.returncode == 0, result.stderr
        assert [m.payload for m in recorded(sealed)] == kept
    else:  # a torn last line is cut in place: that needs no room
        result = run_cli("recover", str(path))
        assert result.returncode == 0, result.stderr
        assert [m.payload for m in recorded(path)] == kept


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_disk_already_full_leaves_nothing_behind(broker: Mosquitto, small_disk: SmallDisk, fmt: str) -> None:
    small_disk.fill()
    before = sorted(os.listdir(small_disk.directory))
    path = small_disk.directory / f"rec.{fmt}"
    recorder = start_limited(small_disk, "record", str(path), "-b", broker.tcp_url, "-t", f"full/{uid()}",
                             "--duration", "5", full=True)
    assert recorder.wait(30) == EXIT_RECORDING, recorder.stderr
    errors = error_lines(recorder.stderr)
    assert len(errors) == 1 and small_disk.reason in errors[0], recorder.stderr
    assert sorted(os.listdir(small_disk.directory)) == before  # no empty file, no .partial/ in the way


def test_convert_onto_a_full_disk_leaves_no_half_written_file(small_disk: SmallDisk, tmp_path: Path) -> None:
    source = tmp_path / "big.parquet"
    rng = random.Random(3)
    with open_writer(source, metadata=RecordingMetadata(), crash_safe=False) as writer:
        for i in range(200):
            writer.write(Message("big/t", rng.randbytes(20_000), 1, False, 1_790_000_000_000_000_000 + i))
    for target in ("out.jsonl", "out.parquet"):
        convert = start_limited(small_disk, "convert", str(source), str(small_disk.directory / target))
        assert convert.wait(60) == EXIT_RECORDING, convert.stderr
        errors = error_lines(convert.stderr)
        assert len(errors) == 1 and small_disk.reason in errors[0], convert.stderr
        assert os.listdir(small_disk.directory) == []


# -- never delete what is not ours ------------------------------------------------------------


@pytest.fixture
def char_device(tmp_path: Path) -> Path:
    """A character device that is always full (like /dev/full): our own copy when root, so
    a bug that deletes its output cannot take the system's away."""
    if os.geteuid() != 0:
        return Path("/dev/full")  # only root could delete it
    path = tmp_path / "full.jsonl"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    return path


def test_a_failed_write_never_deletes_a_file_it_did_not_make(char_device: Path, broker: Mosquitto) -> None:
    with pytest.raises(RecordingError, match="the disk is full"):
        open_writer(char_device, metadata=RecordingMetadata(), format="jsonl")
    assert stat.S_ISCHR(char_device.stat().st_mode)
    result = run_cli("record", str(char_device), "--format", "jsonl", "--force", "-b", broker.tcp_url,
                     "--duration", "1")
    assert result.returncode == EXIT_RECORDING and "not a regular file" in result.stderr, result.stderr
    assert len(error_lines(result.stderr)) == 1 and stat.S_ISCHR(char_device.stat().st_mode)


# -- a slow disk ---------------------------------------------------------------------------


class SlowDiskWriter(JsonlWriter):
    """A JSONL writer on a disk that takes 0.6 s for every fsync."""

    def _sync(self) -> None:
        time.sleep(0.6)
        super()._sync()


def test_a_slow_disk_delays_durability_but_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "slow.jsonl"
    writer = SlowDiskWriter(path, RecordingMetadata(), flush_interval=0.05).open()
    behind = []
    for i in range(3000):  # ~1.5 s of messages arriving while the disk lags
        writer.write(Message("slow/t", b"%d" % i, 1, False, T0 + i))
        if i % 100 == 99:
            time.sleep(0.05)
            behind.append(writer.unsynced_s())
    assert max(behind) > 0.6  # what a crash would lose grows with the disk's delay
    summary = writer.close()
    assert summary.messages == 3000
    assert [m.payload for m in recorded(path)] == [b"%d" % i for i in range(3000)]


def test_record_says_when_the_disk_falls_behind(capsys: pytest.CaptureFixture[str]) -> None:
    from tesaiot_cli.cliutil import StopSignals
    from tesaiot_cli.commands import record as record_command
    from tesaiot_cli.services import record as record_service
    from tesaiot_cli.services import recorder as recorder_service

    class Lagging:
        messages = 0

        def check(self) -> None:
            pass

        def unsynced_s(self) -> float:
            return 7.0

        def disk_bytes(self) -> int:
            return 0

    stop = StopSignals()
    threading.Timer(0.5, stop.event.set).start()
    why = recorder_service._wait(Lagging(), Lagging(), done=threading.Event(), stop=stop.event.is_set,  # type: ignore[arg-type]
                                 started=time.monotonic(), duration_s=None,
                                 on_tick=record_service.RecordProgress(time.monotonic(),
                                                                       record_command.Console()).tick)
    assert why == "signal"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "disk is slow" in line]
    assert warnings == ["tesaiot: warning: the disk is slow: the last 7 s of messages are not on disk yet "
                        "(held in memory; a crash would lose them); recording continues"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_bug_in_a_writer_is_not_reported_as_a_disk_error(tmp_path: Path, fmt: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file's and pyarrow's errors become "cannot write" (exit 5): a bug of ours (here a
    TypeError from the batch step) stays itself, so the CLI says "internal error" and exits 70."""
    path = tmp_path / f"bug.{fmt}"
    def bug(self: object, columns: object) -> None:
        raise TypeError("a bug, not the disk")

    writer = open_writer(path, metadata=RecordingMetadata())
    try:
        monkeypatch.setattr(type(writer), "_write_batch", bug)
        writer.write(Message("device/d/telemetry", b"1", 0, False, 1))
        with pytest.raises(TypeError, match="a bug, not the disk"):
            writer.flush()
        with pytest.raises(TypeError, match="a bug, not the disk"):  # kept: every later call says it
            writer.write(Message("device/d/telemetry", b"2", 0, False, 2))
        with pytest.raises(TypeError, match="a bug, not the disk"):
            writer.close()
    finally:
        writer.discard()
