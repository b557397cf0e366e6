"""MQTT shared subscriptions for ``record``: ``--share GROUP`` and ``--workers N`` processes.

One Python process tops out around 50k msg/s (paho and the GIL), so each worker is its
own process (``multiprocessing`` with the ``spawn`` start method: a clean interpreter,
no forked threads or locks) running the one recorder flow
(:func:`~tesaiot_cli.services.recorder.run_recorder`) with its own paho client and its own
:class:`~tesaiot_cli.recording.dataset.writer.DatasetWriter`. They subscribe to
``$share/GROUP/FILTER``, so the broker hands each message to one of them, and write
their own files into the same dataset.

The parent never prints: ``record``'s run (:mod:`~tesaiot_cli.services.record`) polls
:class:`WorkerPool` for events, counts and errors. Workers ignore SIGINT (the terminal
sends it to the whole process group: the parent decides), stop cleanly on SIGTERM, stop
when the parent dies, and report errors back as (class name, text), re-raised in the
parent as the same exception class. Connection settings travel through the spawn pipe,
never on a command line.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tesaiot_cli import errors
from tesaiot_cli.config import BrokerURL, ConnectionSettings, Secret
from tesaiot_cli.errors import RecordingError, TesaiotError
from tesaiot_cli.message import level_forbidden_char
from tesaiot_cli.recording.model import RecordingMetadata, WriteSummary

MAX_WORKERS = 64
POLL_S = 0.1
START_GRACE_S = 60.0  # spawning N interpreters that import pyarrow, on a busy machine
STOP_GRACE_S = 120.0  # sealing the last files (splitting may read them once)


SHARE_PREFIX = "$share/"


def check_share_group(group: str) -> str:
    """A shared subscription group name: not empty, one topic level, no wildcard.

    Raises :class:`ConfigError`.
    """
    if not group or not group.strip():
        raise errors.ConfigError("invalid --share '': give a group name, e.g. --share recorders")
    bad = level_forbidden_char(group)
    if bad is not None:
        raise errors.ConfigError(f"invalid --share {group!r}: a group name cannot contain {bad!r}")
    return group


def shared_filters(group: str, filters: list[str]) -> list[str]:
    """``$share/GROUP/FILTER`` for each filter. Raises :class:`ConfigError` for a filter
    that is already a shared one."""
    for topic_filter in filters:
        if topic_filter.startswith(("$share/", "$queue/")):
            raise errors.ConfigError(f"topic filter {topic_filter!r} is already shared: give the plain filter, "
                                     f"--share adds {SHARE_PREFIX}GROUP/")
    return [f"{SHARE_PREFIX}{group}/{topic_filter}" for topic_filter in filters]


def quiet_resource_tracker() -> None:
    """The worker pool's queues and events are named semaphores, registered with Python's
    resource tracker (a helper process of the parent's). When the parent is killed with
    SIGKILL the tracker unlinks them, as it should, but prints "There appear to be N leaked
    semaphore objects to clean up at shutdown": alarming, and nothing is leaked. The
    tracker starts with the parent's -W options, so this filter reaches it too. Called
    before the first semaphore is made (the tracker starts then)."""
    import warnings

    option = "ignore:resource_tracker:UserWarning"
    if option not in sys.warnoptions:
        sys.warnoptions.append(option)
    warnings.filterwarnings("ignore", message="resource_tracker", category=UserWarning)


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker needs (picklable; secrets as plain text only inside the pipe)."""

    root: Path
    settings: dict[str, Any]
    filters: tuple[str, ...]
    qos: int
    metadata: RecordingMetadata
    partition: str
    recorder_id: str
    count: int | None = None
    duration_s: float | None = None
    roll_interval_s: float | None = None
    memory_pool: str | None = None  # the parent's ARROW_DEFAULT_MEMORY_POOL, if set
    # An s3:// dataset: (the prefix, the storage settings); ``root`` is then the local spool.
    remote: tuple[str, Any] | None = None


def settings_to_wire(settings: ConnectionSettings) -> dict[str, Any]:
    """The settings as plain values for a worker (secrets revealed: the spawn pipe only)."""
    data = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    url = settings.url
    data["url"] = {f.name: getattr(url, f.name) for f in dataclasses.fields(url)}
    for holder, key in ((data["url"], "password"), (data, "password"), (data, "token")):
        secret = holder.get(key)
        holder[key] = secret.reveal() if isinstance(secret, Secret) else None
    return data


def settings_from_wire(data: dict[str, Any], *, client_suffix: str) -> ConnectionSettings:
    """Rebuild the settings in a worker; the client id gets ``client_suffix`` (unique per worker)."""
    values = dict(data)
    url = dict(values.pop("url"))
    url["password"] = Secret(url["password"]) if url.get("password") is not None else None
    for key in ("password", "token"):
        values[key] = Secret(values[key]) if values.get(key) is not None else None
    values["client_id"] = f"{values['client_id']}{client_suffix}"
    return ConnectionSettings(url=BrokerURL(**url), **values)


def _error_from(kind: str, text: str) -> TesaiotError:
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, TesaiotError):
        return cls(text)
    return RecordingError(text) if kind == "OSError" else TesaiotError(text)


def worker_main(index: int, plan: WorkerPlan, channel: Any, counters: Any, remaining: Any, stop: Any,
                parent_pid: int) -> None:
    """The body of worker ``index`` (1-based), in its own process."""
    from tesaiot_cli.process.lean import refuse_pandas_for_pyarrow

    refuse_pandas_for_pyarrow()  # a spawned worker does not run the CLI's main
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    local_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())
    try:
        summary, reconnects, protocol_errors = _work(index, plan, channel, counters, remaining, stop, local_stop,
                                                     parent_pid)
        channel.put(("done", index, summary, reconnects, protocol_errors))
    except TesaiotError as exc:
        channel.put(("error", index, type(exc).__name__, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, never a traceback
        channel.put(("error", index, "internal", f"{type(exc).__name__}: {exc}"))


class SharedLimit:
    """``--count N`` shared by every worker: a counter in shared memory, under its lock."""

    def __init__(self, remaining: Any) -> None:
        self._remaining = remaining
        self._lock = remaining.get_lock()

    def take(self) -> tuple[bool, bool]:
        with self._lock:
            if self._remaining.value <= 0:
                return False, False
            self._remaining.value -= 1
            return True, self._remaining.value == 0

    @property
    def reached(self) -> bool:
        return bool(self._remaining.value <= 0)


def _work(index: int, plan: WorkerPlan, channel: Any, counters: Any, remaining: Any, stop: Any,
          local_stop: threading.Event, parent_pid: int) -> tuple[WriteSummary, int, int]:
    from tesaiot_cli.recording.dataset.partition import parse_partition
    from tesaiot_cli.recording.dataset.writer import DatasetWriter
    from tesaiot_cli.recording.model import RecordingWriter
    from tesaiot_cli.recording.schema import use_lean_memory_pool
    from tesaiot_cli.services.recorder import run_recorder

    use_lean_memory_pool({"ARROW_DEFAULT_MEMORY_POOL": plan.memory_pool} if plan.memory_pool else {})
    settings = settings_from_wire(plan.settings, client_suffix=f"-w{index}")
    metadata = dataclasses.replace(plan.metadata, extra={**plan.metadata.extra, "worker": index})
    limit = SharedLimit(remaining) if remaining is not None else None

    def open_writer() -> RecordingWriter:
        if plan.remote is not None:
            from tesaiot_cli.recording import storage
            from tesaiot_cli.recording.remote_dataset import RemoteDatasetWriter

            url, options = plan.remote
            storage.configure(options)
            prefix = storage.remote(Path(url))
            assert prefix is not None
            return RemoteDatasetWriter(prefix, plan.root, metadata=metadata, spec=parse_partition(plan.partition),
                                       worker_id=f"{plan.recorder_id}-w{index}", roll_interval_s=plan.roll_interval_s,
                                       owns_spool=False).open()
        return DatasetWriter(plan.root, metadata=metadata, spec=parse_partition(plan.partition),
                             worker_id=f"{plan.recorder_id}-w{index}", roll_interval_s=plan.roll_interval_s).open()

    def tick(writer: RecordingWriter, now: float) -> str | None:
        counters[2 * index - 2] = writer.messages
        counters[2 * index - 1] = writer.disk_bytes()
        if os.getppid() != parent_pid:
            return "parent"
        return "count" if limit is not None and limit.reached else None  # --count reached (by any worker)

    run = run_recorder(
        settings, open_writer, list(plan.filters), plan.qos, limit=limit, duration_s=plan.duration_s,
        stop=lambda: stop.is_set() or local_stop.is_set(),
        on_event=lambda kind, text: channel.put(("event", index, kind, text)),
        on_subscribed=lambda _writer: channel.put(("ready", index)), on_tick=tick)
    counters[2 * index - 2] = run.summary.messages
    counters[2 * index - 1] = run.summary.file_bytes
    return run.summary, run.reconnects, run.protocol_errors


class WorkerPool:
    """The parent's side: start, watch and stop ``workers`` worker processes."""

    def __init__(self, workers: int, plan: WorkerPlan, *, on_event: Callable[[int, str, str], None]) -> None:
        self.workers = workers
        self.plan = plan
        self._on_event = on_event
        self._ctx = multiprocessing.get_context("spawn")
        self._channel = self._ctx.Queue()
        self._counters = self._ctx.Array("q", 2 * workers, lock=False)
        self._remaining = self._ctx.Value("q", plan.count) if plan.count is not None else None
        self._stop = self._ctx.Event()
        self._processes: list[Any] = []
        self.ready: set[int] = set()
        self.summaries: dict[int, WriteSummary] = {}
        self.reconnects = 0
        self.protocol_errors = 0
        self.error: TesaiotError | None = None

    def start(self, *, interrupt: threading.Event, timeout: float) -> None:
        """Start the workers and wait until every one has subscribed.

        Raises the first worker's error (:class:`TesaiotError` subclasses), or
        :class:`ConnectError` when they are not ready within ``timeout`` + a start-up grace.
        """
        for index in range(1, self.workers + 1):
            process = self._ctx.Process(
                target=worker_main, name=f"tesaiot-record-w{index}", daemon=False,
                args=(index, self.plan, self._channel, self._counters, self._remaining, self._stop, os.getpid()))
            process.start()
            self._processes.append(process)
        deadline = time.monotonic() + timeout + START_GRACE_S
        while len(self.ready) < self.workers:
            self.poll()
            if self.error is not None or interrupt.is_set():
                return
            if time.monotonic() >= deadline:
                self.error = errors.ConnectError(f"only {len(self.ready)} of {self.workers} workers subscribed "
                                                 f"within {timeout + START_GRACE_S:g} s")
                return
            time.sleep(POLL_S / 2)

    def poll(self) -> None:
        """Handle what the workers reported; notice a worker that died (``error`` is set)."""
        import queue

        while True:
            try:
                item = self._channel.get_nowait()
            except queue.Empty:
                break
            kind, index = item[0], item[1]
            if kind == "ready":
                self.ready.add(index)
            elif kind == "event":
                self._on_event(index, item[2], item[3])
            elif kind == "done":
                self.summaries[index] = item[2]
                self.reconnects += item[3]
                self.protocol_errors += item[4]
            elif kind == "error" and self.error is None:
                self.error = _error_from(item[2], f"worker {index}: {item[3]}")
        for index, process in enumerate(self._processes, start=1):
            if process.exitcode is not None and index not in self.summaries and self.error is None:
                time.sleep(POLL_S)  # its last report may still be in the pipe
                if self._channel.empty() and index not in self.summaries:
                    self.error = RecordingError(
                        f"worker {index} stopped unexpectedly (exit code {process.exitcode}); what it recorded "
                        f"is in {self.plan.root} ('tesaiot recover {self.plan.root}' seals its last file)")

    @property
    def messages(self) -> int:
        return sum(self._counters[i] for i in range(0, 2 * self.workers, 2))

    @property
    def disk_bytes(self) -> int:
        return sum(self._counters[i] for i in range(1, 2 * self.workers, 2))

    @property
    def counted_out(self) -> bool:
        """Whether ``--count`` messages were taken (the workers then only need stopping)."""
        return self._remaining is not None and self._remaining.value <= 0

    @property
    def finished(self) -> bool:
        """Whether every worker has stopped by itself (``--duration``)."""
        return all(process.exitcode is not None for process in self._processes)

    def stop(self, *, timeout: float = STOP_GRACE_S) -> None:
        """Ask every worker to stop, wait (bounded) for their summaries, then make sure they exit."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.exitcode is None for p in self._processes):
            self.poll()
            time.sleep(POLL_S / 2)
        for process in self._processes:
            if process.exitcode is None:
                process.terminate()  # SIGTERM: the worker still seals what it has
                process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join(5)
        self.poll()
        self._channel.close()
