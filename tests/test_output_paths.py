"""Output paths: one rule for every command that writes a file, and nothing left behind
when such a command fails (docs/usage.md, "Output paths"; README, exit code 5).

Every writing command (record to a file and to a dataset, simulate --record, convert both
ways and --from, export to .parquet/.csv/.mcap, detect --to, plot -o, recover --output)
gets each path fault: a missing directory, a path under a regular file, a directory that
cannot be written, and a directory where a file goes (a file where a dataset goes). Each
gives exit 5, one line naming the user's own path, never a temporary name, and leaves the
directory as it was. Then the failures after the start: a recording that fails to read
half-way, a full disk, SIGINT and SIGTERM. The CLI runs in-process (no broker is involved:
the networked commands point at a port nobody listens on, and must refuse the path first).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tesaiot_cli.cli import app
from tesaiot_cli.cliutil import EXIT_RECORDING
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tests.support.broker import free_ports
from tests.support.cli import clean_env, cli_command

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "recordings" / "dps368-sample.parquet"  # 300 labelled DPS368 readings
FOREIGN = REPO / "tests" / "data" / "foreign" / "mosquitto_sub-F-j.jsonl"
# The hidden names writers use while a file is unfinished (files.temp_path, export's spill,
# plot's image): none may ever reach a message, or stay behind.
TEMP_NAME = re.compile(r"(^|/)\.[^/\s]+\.[0-9a-f]{8}(\.[a-z]+)+")
CLI_ENV_PREFIXES = ("MQTT_", "TESAIOT_", "CA_CERT_PATH", "DEVICE_ID", "PUBLISH_INTERVAL", "ANOMALY_INTERVAL")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The recordings the commands read (outside the directories the tests watch)."""
    root = tmp_path_factory.mktemp("inputs")
    with open_reader(SAMPLE) as reader:
        metadata, rows = reader.metadata, list(reader.iter_labelled())
    jsonl = root / "sample.jsonl"
    with open_writer(jsonl, metadata=metadata, crash_safe=False) as writer:
        for message, label in rows:
            writer.write(message, label=label)
    # A JSONL recording with a broken line in the middle: 150 readable readings before it.
    lines = jsonl.read_bytes().splitlines(keepends=True)
    garbage = root / "garbage.jsonl"
    garbage.write_bytes(b"".join(lines[:151] + [b'{"time": 1, "topic": \x00garbage\n'] + lines[151:]))
    # A Parquet recording of 3 row groups, the second damaged: the first 100 readable.
    damaged = root / "damaged.parquet"
    from tesaiot_cli.recording.formats.parquet_write import ParquetWriter

    parts = ParquetWriter(damaged, metadata, row_group_rows=100, crash_safe=False).open()
    for index, (message, label) in enumerate(rows):
        parts.write(message, label=label)
        if index % 100 == 99:
            parts.flush()
    parts.close()
    import pyarrow.parquet as pq

    page = pq.ParquetFile(damaged).metadata.row_group(1).column(2).data_page_offset
    data = bytearray(damaged.read_bytes())
    for offset in range(page + 20, page + 40):
        data[offset] ^= 0x5A
    damaged.write_bytes(bytes(data))
    return {"sample": SAMPLE, "jsonl": jsonl, "garbage": garbage, "damaged": damaged}


DEAD = f"mqtt://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: a path must be refused before connecting

# name -> (argv for OUT, the output's suffix); "{out}" is the user's output path.
WRITERS: dict[str, tuple[list[str], str]] = {
    "record": (["record", "{out}", "-b", DEAD], ".parquet"),
    "record-jsonl": (["record", "{out}", "-b", DEAD], ".jsonl"),
    "record-dataset": (["record", "{out}", "--workers", "2", "-b", DEAD], ""),
    "simulate": (["simulate", "--record", "{out}", "-b", DEAD, "--count", "1"], ".parquet"),
    "convert-to-jsonl": (["convert", "{sample}", "{out}"], ".jsonl"),
    "convert-to-parquet": (["convert", "{jsonl}", "{out}"], ".parquet"),
    "convert-from": (["convert", "--from", "mosquitto-json", str(FOREIGN), "{out}"], ".parquet"),
    "export-parquet": (["export", "{sample}", "{out}"], ".parquet"),
    "export-csv": (["export", "{sample}", "{out}"], ".csv"),
    "export-mcap": (["export", "{sample}", "{out}"], ".mcap"),
    "detect": (["detect", "{sample}", "--to", "{out}"], ".parquet"),
    "plot": (["plot", "{sample}", "-o", "{out}"], ".png"),
    "recover": (["recover", "{damaged}", "--output", "{out}"], ".parquet"),
}


def invoke(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run the CLI in-process; its exit code and stderr."""
    for name in list(os.environ):
        if name.startswith(CLI_ENV_PREFIXES):
            monkeypatch.delenv(name)
    result = CliRunner().invoke(app, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stderr


def argv_for(name: str, out: Path, inputs: dict[str, Path], *extra: str) -> list[str]:
    template, _suffix = WRITERS[name]
    names = {key: str(value) for key, value in inputs.items()}
    return [part.format(out=out, **names) for part in template] + list(extra)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (hidden ones too) with the bytes of each file."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A directory in which no file can be created. The tests run as root on the CI
    image, and root passes every permission check (a chmod 0o500 means nothing to it),
    so as root the directory is made immutable with ``chattr +i`` (ext4, xfs and btrfs
    have it; it fails the test where the file system lacks it, rather than testing
    nothing); as another user, a plain ``chmod 0o500``."""
    directory = tmp_path / "locked"
    directory.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], check=True, capture_output=True)
        try:
            yield directory
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True, capture_output=True)
    else:
        directory.chmod(0o500)
        try:
            yield directory
        finally:
            directory.chmod(0o700)


FAULTS = ("missing-dir", "under-a-file", "unwritable-dir", "directory-in-the-way")


def make_fault(fault: str, name: str, tmp_path: Path, unwritable: Path) -> tuple[Path, str]:
    """The output path for ``fault`` and what the error line must say about it."""
    suffix = WRITERS[name][1]
    if fault == "missing-dir":
        return tmp_path / "nodir" / f"out{suffix}", f"the directory {tmp_path / 'nodir'} does not exist"
    if fault == "under-a-file":
        (tmp_path / "afile").write_bytes(b"a file")
        return tmp_path / "afile" / f"out{suffix}", f"{tmp_path / 'afile'} is a file, not a directory"
    if fault == "unwritable-dir":
        return unwritable / f"out{suffix}", f"the directory {unwritable} is not writable"
    out = tmp_path / f"out{suffix}"
    if name == "record-dataset":  # the mirror: a file where the dataset directory goes
        out.write_bytes(b"a file")
        return out, "it is a file, and a dataset is a directory"
    out.mkdir()
    (out / "kept.txt").write_bytes(b"kept")
    return out, "it is a directory"


# record FILE with FILE an existing directory records into it as a dataset (docs/record.md):
# not a fault there.
PATH_CASES = [(name, fault) for name in WRITERS for fault in FAULTS
              if not (fault == "directory-in-the-way" and name in ("record", "record-jsonl"))]


@pytest.mark.parametrize(("name", "fault"), PATH_CASES)
def test_every_path_fault_is_exit_5_one_line_the_users_path_and_nothing_left(
        name: str, fault: str, tmp_path: Path, unwritable: Path, inputs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out, says = make_fault(fault, name, tmp_path, unwritable)
    before = snapshot(tmp_path)
    code, stderr = invoke(argv_for(name, out, inputs), monkeypatch)
    assert code == EXIT_RECORDING, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"tesaiot: error: cannot write {out}: {says}"), stderr
    assert not TEMP_NAME.search(stderr), stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["convert-to-jsonl", "convert-to-parquet", "export-parquet", "export-csv",
                                  "export-mcap", "detect", "plot"])
def test_write_errors_past_the_check_name_the_users_path_not_a_temporary_one(
        name: str, tmp_path: Path, unwritable: Path, inputs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check comes first, but a directory can change under a running command: the
    writers' own errors (pyarrow's "Failed to open local file '.o.parquet.2c06.tmp'",
    matplotlib's) also name the user's path, with exit 5."""
    from tesaiot_cli.recording.files import check_output_path

    for module in list(sys.modules.values()):
        if module is not None and getattr(module, "check_output_path", None) is check_output_path:
            monkeypatch.setattr(module, "check_output_path", lambda *_a, **_k: None)
    out = unwritable / f"out{WRITERS[name][1]}"
    code, stderr = invoke(argv_for(name, out, inputs), monkeypatch)
    assert code == EXIT_RECORDING, stderr
    assert stderr.count("\n") == 1, stderr
    assert f"cannot write {out}: " in stderr or f"cannot finish {out}: " in stderr or f"cannot create {out}: " in stderr
    assert not TEMP_NAME.search(stderr), stderr
    assert list(unwritable.iterdir()) == []


# -- failures after the start: nothing half-written, nothing falsely sealed ------------------

READING = ["convert-to-jsonl", "convert-to-parquet", "export-parquet", "export-csv", "export-mcap", "detect",
           "detect-jsonl", "plot"]


def reading_argv(name: str, source: Path, out: Path) -> list[str]:
    if name == "detect-jsonl":
        return ["detect", str(source), "--to", str(out)]
    template, _suffix = WRITERS[name]
    return [part.format(out=out, sample=source, jsonl=source) for part in template]


def reading_suffix(name: str) -> str:
    return ".jsonl" if name == "detect-jsonl" else WRITERS[name][1]


@pytest.mark.parametrize("old", [False, True], ids=["new", "over-an-old-file"])
@pytest.mark.parametrize("source", ["garbage", "damaged"])
@pytest.mark.parametrize("name", READING)
def test_a_recording_that_fails_to_read_half_way_leaves_no_output(
        name: str, source: str, old: bool, tmp_path: Path, inputs: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21 item 7: `detect REC --to ALERTS` with REC damaged after 100 readings left a
    sealed ALERTS with what came before (and --force had deleted the old one first): a
    later `score` took it for a detector that found little. Now: exit 5, no ALERTS, the
    old file as it was."""
    out = tmp_path / f"out{reading_suffix(name)}"
    if old:
        out.write_bytes(b"the old output, kept")
    before = snapshot(tmp_path)
    code, stderr = invoke(reading_argv(name, inputs[source], out) + (["--force"] if old else []), monkeypatch)
    assert code == EXIT_RECORDING, stderr
    assert stderr.count("\n") == 1 and "damaged" in stderr, stderr
    assert snapshot(tmp_path) == before


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None] | None, str]]:
    """A directory on a full disk: a small tmpfs filled to the last byte when we may mount
    one (root), else a file size limit of 0 on the command's process (it fails writes the
    same way, EFBIG instead of ENOSPC). Yields the directory, the limit to apply in the
    child (None with the tmpfs) and what the error must say."""
    directory = tmp_path / "disk"
    directory.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(directory)], capture_output=True).returncode == 0
    try:
        if mounted:
            with contextlib.suppress(OSError), open(directory / "ballast", "wb") as handle:
                for _ in range(128):
                    handle.write(b"\0" * 4096)
                    handle.flush()
            yield directory, None, "the disk is full"
        else:
            def limit() -> None:
                import resource

                resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

            yield directory, limit, "a file size limit was reached"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30)


@pytest.mark.parametrize("name", ["convert-to-jsonl", "convert-to-parquet", "convert-from", "export-parquet",
                                  "export-csv", "export-mcap", "detect", "plot", "recover"])
def test_a_full_disk_is_exit_5_the_users_path_and_the_old_file_kept(
        name: str, full_disk: tuple[Path, Callable[[], None] | None, str], inputs: dict[str, Path]) -> None:
    directory, limit, says = full_disk
    out = directory / f"out{WRITERS[name][1]}"
    force = []
    if name != "recover":  # recover never overwrites
        with contextlib.suppress(OSError):
            out.write_bytes(b"")  # an old output (empty: the disk is full), to be kept as it is
        force = ["--force"]
    before = snapshot(directory)
    result = subprocess.run(cli_command(*argv_for(name, out, inputs), *force), env=clean_env(), capture_output=True,
                            text=True, timeout=120, preexec_fn=limit)  # noqa: PLW1509 - the limit is for the child only
    assert result.returncode == EXIT_RECORDING, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("tesaiot: error: ") and str(out) in result.stderr and says in result.stderr
    assert not TEMP_NAME.search(result.stderr), result.stderr
    assert snapshot(directory) == before


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL recording large enough that converting, exporting or detecting on it takes
    seconds: long enough to be signalled while its output is unfinished."""
    import orjson

    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open_writer(path, metadata=RecordingMetadata(), crash_safe=False) as writer:
        for i in range(300_000):
            device = f"sensor-{i % 8}"
            writer.write(Message(f"device/{device}/telemetry", orjson.dumps(
                {"device_id": device, "data": {"pressure": 1000.0 + i % 17, "temperature": 20.5}}),
                0, False, 1_796_000_000_000_000_000 + i * 1_000_000))
    return path


def default_sigint() -> None:
    """A child started from a shell's background job inherits an ignored SIGINT: undone."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("args", [["convert", "{big}", "{dir}/out.parquet"], ["convert", "{big}", "{dir}/out.jsonl"],
                                  ["export", "{big}", "{dir}/out.parquet"], ["export", "{big}", "{dir}/out.csv"],
                                  ["detect", "{big}", "--to", "{dir}/out.jsonl"]],
                         ids=["convert-parquet", "convert-jsonl", "export-parquet", "export-csv", "detect"])
def test_a_signal_while_writing_leaves_nothing(args: list[str], signum: int, tmp_path: Path, big: Path) -> None:
    """Ctrl+C (exit 0, as every command: README) and SIGTERM (exit 143, as the signal's
    default) while the output is half-written: it is removed, with its temporary files.
    Before, SIGTERM left the hidden temporary and spill files, and Ctrl+C during detect
    sealed a partial ALERTS."""
    argv = [a.format(big=big, dir=tmp_path) for a in args]
    process = subprocess.Popen(cli_command(*argv), env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=default_sigint)  # noqa: PLW1509
    try:
        for _ in range(600):  # until the unfinished output exists (bounded: 60 s)
            if any(p.name.startswith(".") for p in tmp_path.iterdir()) or process.poll() is not None:
                break
            time.sleep(0.1)
        assert process.poll() is None, "the command ended before it could be signalled: make the input larger"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == (0 if signum == signal.SIGINT else 128 + signal.SIGTERM), stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
