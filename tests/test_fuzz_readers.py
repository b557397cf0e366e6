"""A fuzz pass of the recording readers over randomly damaged files.

Valid recordings (sealed Parquet, JSONL, and an unsealed Parquet ``.partial/`` left by a
"crash") are damaged at random: bytes flipped, cut at a random offset, a range zeroed,
a chunk repeated or random bytes inserted. Reading each damaged file the way the commands
do (``info``: tables and statistics; ``replay``/``convert``: messages; ``recover``) must
either work, possibly with fewer rows, or raise :class:`RecordingError`: never another
exception, never a hang (each case runs under a time limit). The seed is fixed and the
number of cases bounded, so the pass is deterministic and quick.
"""

from __future__ import annotations

import functools
import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, recover
from tesaiot_cli.recording.formats.jsonl import JsonlWriter
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter

SEED = 20261122
CASES = 120  # per kind of file
CASE_TIMEOUT_S = 20.0
T0 = 1_790_000_000_000_000_000


def sample_messages() -> list[tuple[Message, str | None]]:
    rng = random.Random(SEED)
    rows = []
    for i in range(60):
        payload = [b'{"timestamp": "2026-11-22T08:24:56.%06d+00:00", "data": {"pressure": %d}}' % (i, i),
                   rng.randbytes(rng.randint(0, 40)), "é€ text".encode()][i % 3]
        label = [None, "normal", "spike"][i % 3]
        rows.append((Message(f"device/d{i % 4}/telemetry/DPS368", payload, i % 3, i % 7 == 0, T0 + i * 10**7), label))
    return rows


def build(kind: str, directory: Path) -> Path:
    """A valid recording of ``kind``: several row groups / batches, labels, odd payloads."""
    path = directory / ("rec.jsonl" if kind == "jsonl" else "rec.parquet")
    metadata = RecordingMetadata(tool_version="0.1.0", source="simulate", seed=1, labelled=True,
                                 broker="mqtt://127.0.0.1:1883", topic_filters=("device/#",))
    if kind == "jsonl":
        writer: JsonlWriter | ParquetWriter = JsonlWriter(path, metadata, crash_safe=True).open()
    else:
        writer = ParquetWriter(path, metadata, crash_safe=True, row_group_rows=16).open()
    for index, (message, label) in enumerate(sample_messages()):
        writer.write(message, label=label)
        if index % 16 == 15:
            writer.flush()  # one journal batch (and row group) per flush
    if kind == "partial":
        writer.flush()
        writer.discard()  # as a kill would leave it: the .partial/ directory, unsealed
    else:
        writer.close()
    return path


def targets(path: Path) -> list[Path]:
    """The files to damage: the recording, or every file of its .partial/ directory."""
    if path.exists():
        return [path]
    return sorted(p for p in path.with_name(path.name + ".partial").iterdir() if p.is_file())


def damage(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    how = rng.choice(["flip", "flip", "truncate", "zero", "repeat", "insert"])
    if not buf:
        return bytes(rng.randbytes(rng.randint(1, 20)))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= rng.randint(1, 255)
    elif how == "truncate":
        del buf[rng.randrange(len(buf)):]
    elif how == "zero":
        start = rng.randrange(len(buf))
        size = min(rng.randint(1, 64), len(buf) - start)
        buf[start:start + size] = bytes(size)
    elif how == "repeat":
        start = rng.randrange(len(buf))
        chunk = buf[start:start + rng.randint(1, 128)]
        at = rng.randrange(len(buf))
        buf[at:at] = chunk
    else:
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf)


def read_like_the_commands(path: Path, work: Path) -> int:
    """What info, replay/convert and recover do with a recording; returns the rows
    ``info`` could read (-1: refused with a :class:`RecordingError`)."""
    from tesaiot_cli.analysis.stats import compute_stats

    rows = -1
    for attempt in range(3):
        try:
            with open_reader(path) as reader:
                if attempt == 0:
                    reader.count()
                    rows = compute_stats(reader.iter_tables()).messages  # type: ignore[attr-defined]
                elif attempt == 1:
                    assert sum(1 for _ in reader.iter_labelled()) == rows
                else:
                    for message in reader:
                        assert isinstance(message.payload, bytes) and isinstance(message.topic, str)
        except RecordingError:
            pass
    try:
        recover(path, output=work / f"recovered{path.suffix}")
    except RecordingError:
        pass
    return rows


def run_with_time_limit(function: Callable[[], object], seconds: float) -> object:
    """Run ``function`` in a thread; fail (instead of hanging) when it takes too long."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"reading a damaged recording did not finish within {seconds} s (a hang)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "partial"])
def test_damaged_recordings_are_read_or_refused_cleanly(kind: str, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    original = build(kind, pristine)
    check = tmp_path / "check"
    shutil.copytree(pristine, check)  # recover may seal or repair in place: never on the pristine copy
    assert run_with_time_limit(lambda: read_like_the_commands(check / original.name, check), CASE_TIMEOUT_S) == 60
    rng = random.Random(f"{SEED}-{kind}")
    outcomes = {"read": 0, "fewer": 0, "refused": 0}
    for case in range(CASES):
        work = tmp_path / f"case-{case}"
        shutil.copytree(pristine, work)
        path = work / original.name
        victim = rng.choice(targets(path))
        victim.write_bytes(damage(victim.read_bytes(), rng))
        try:
            rows = run_with_time_limit(functools.partial(read_like_the_commands, path, work), CASE_TIMEOUT_S)
        except BaseException as exc:
            raise AssertionError(f"case {case} ({kind}, {victim.name} damaged): {exc!r}") from exc
        outcomes["refused" if rows == -1 else "read" if rows == 60 else "fewer"] += 1
        shutil.rmtree(work)
    print(kind, outcomes)
    assert sum(outcomes.values()) == CASES
