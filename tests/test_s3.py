"""Recordings on object storage (issue 24): `s3://` through pyarrow.fs, against a real S3 API
(moto's server on loopback, tests/support/s3.py) and a real mosquitto."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from tesaiot_cli.cliutil import EXIT_AUTH, EXIT_RECORDING
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording import storage
from tests.support.broker import Mosquitto
from tests.support.cli import Proc, clean_env, record, run_cli
from tests.support.clients import publish
from tests.support.s3 import Moto, duckdb_on, start_moto


def _topic() -> str:
    return f"s3test/{uuid.uuid4().hex[:8]}"


def _record(moto: Moto, broker: Mosquitto, url: str, top: str, *args: str, **extra: str) -> Proc:
    extra.setdefault("TESAIOT_S3_SEGMENT_S", "1")  # a segment a second (default 5): shorter tests
    return record(url, "-b", broker.tcp_url, "-t", f"{top}/#", *args, env=clean_env(**moto.env(**extra)))


def _messages(top: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{top}/d{i % 3}/telemetry", json.dumps({"n": i}).encode()) for i in range(start, start + count)]


def _a_part_and_no_upload(keys: list[str]) -> bool:
    """A whole part stored and no upload under way (its temporary object): storage stopped
    now fails the next upload, not the end of this one."""
    return any("/part-" in key for key in keys) and not any(storage.UPLOADING in key for key in keys)


def _wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_location_parses_both_spellings_and_prints_the_url() -> None:
    for text in ("s3://bucket/dir/run1.parquet", "s3:/bucket/dir/run1.parquet", Path("s3://bucket/dir/run1.parquet")):
        where = storage.remote(Path(str(text)) if isinstance(text, Path) else Path(text))
        assert where is not None and (where.bucket, where.key) == ("bucket", "dir/run1.parquet")
        assert str(where) == "s3://bucket/dir/run1.parquet"
    assert storage.remote(Path("local/run1.parquet")) is None
    with pytest.raises(ConfigError, match="only s3://"):
        storage.remote(storage.location("gs://bucket/x.parquet"))


def test_endpoint_and_retry_budget_come_from_the_environment() -> None:
    options = storage.resolve_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1",
                                       "TESAIOT_S3_RETRY_S": "2.5"})
    assert (options.endpoint, options.region, options.retry_s) == ("http://127.0.0.1:9000", "eu-west-1", 2.5)
    assert storage.resolve_options({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2"}).endpoint \
        == "http://b:2"
    with pytest.raises(ConfigError, match="TESAIOT_S3_RETRY_S"):
        storage.resolve_options({"TESAIOT_S3_RETRY_S": "soon"})
    assert storage.resolve_options({}).segment_s == 5.0
    assert storage.resolve_options({"TESAIOT_S3_SEGMENT_S": "0.5"}).segment_s == 0.5
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(ConfigError, match="TESAIOT_S3_SEGMENT_S"):
            storage.resolve_options({"TESAIOT_S3_SEGMENT_S": bad})


def test_record_seals_one_object_then_info_replay_export_read_it(moto: Moto, broker: Mosquitto,
                                                                 tmp_path: Path) -> None:
    bucket, top = moto.new_bucket(), _topic()
    url = f"s3://{bucket}/runs/run1.parquet"
    recorder = _record(moto, broker, url, top, "--count", "300")
    publish(broker.tcp_port, _messages(top, 300))
    assert recorder.wait() == 0, recorder.stderr
    assert moto.keys(bucket) == ["runs/run1.parquet"]  # sealed; no .partial parts left
    env = clean_env(**moto.env())
    info = run_cli("info", url, env=env)
    assert info.returncode == 0, info.stderr
    assert "300" in info.stdout and url in info.stdout and "sealed" in info.stdout and " 0 B," not in info.stdout
    replay = run_cli("replay", url, "--to", "-", "--speed", "max", env=env)
    assert replay.returncode == 0, replay.stderr
    assert len(replay.stdout.splitlines()) == 300
    out = tmp_path / "out.csv"
    export = run_cli("export", url, str(out), env=env)
    assert export.returncode == 0, export.stderr
    assert len(out.read_text().splitlines()) == 301


def test_nothing_is_under_the_final_name_until_sealed_and_kill_9_is_recovered(moto: Moto, broker: Mosquitto) -> None:
    bucket, top = moto.new_bucket(), _topic()
    url = f"s3://{bucket}/run2.parquet"
    recorder = _record(moto, broker, url, top)
    try:
        publish(broker.tcp_port, _messages(top, 200))
        _wait_for(lambda: any("/part-" in key for key in moto.keys(bucket)), timeout=30)  # a segment uploaded
        keys = moto.keys(bucket)
        assert "run2.parquet" not in keys and "run2.parquet.partial/metadata.json" in keys
    finally:
        recorder.stop(signal.SIGKILL)
    env = clean_env(**moto.env())
    info = run_cli("info", url, env=env)
    assert info.returncode == 0, info.stderr
    assert "NOT SEALED" in info.stdout and "200" in info.stdout
    recover = run_cli("recover", url, env=env)
    assert recover.returncode == 0, recover.stderr
    assert moto.keys(bucket) == ["run2.parquet"]
    replay = run_cli("replay", url, "--to", "-", "--speed", "max", env=env)
    assert len(replay.stdout.splitlines()) == 200


def test_a_refused_credential_is_one_line_and_exit_4(broker: Mosquitto) -> None:
    strict = start_moto(strict=True)
    try:
        env = clean_env(**strict.env())
        for args in (["info", "s3://bucket/x.parquet"], ["record", "s3://bucket/x.parquet", "-b", broker.tcp_url,
                                                         "-t", f"{_topic()}/#", "--count", "1"]):
            result = run_cli(*args, env=env)
            assert result.returncode == EXIT_AUTH, result.stderr
            assert result.stderr.count("\n") == 1 and "refused the credentials" in result.stderr
            assert "testing-secret" not in result.stderr
    finally:
        strict.stop()


def test_a_missing_bucket_is_one_line_and_exit_5(moto: Moto, broker: Mosquitto) -> None:
    env = clean_env(**moto.env())
    for args in (["info", "s3://no-such-bucket-here/x.parquet"],
                 ["record", "s3://no-such-bucket-here/x.parquet", "-b", broker.tcp_url, "-t", f"{_topic()}/#"]):
        result = run_cli(*args, env=env)
        assert result.returncode == EXIT_RECORDING, result.stderr
        assert result.stderr.count("\n") == 1 and "bucket 'no-such-bucket-here' does not exist" in result.stderr


def test_a_network_fault_mid_upload_is_counted_and_fails_the_recording(broker: Mosquitto) -> None:
    own = start_moto()
    bucket, top = own.new_bucket(), _topic()
    url = f"s3://{bucket}/run3.parquet"
    try:
        recorder = _record(own, broker, url, top, TESAIOT_S3_RETRY_S="2")
        publish(broker.tcp_port, _messages(top, 100))
        _wait_for(lambda: _a_part_and_no_upload(own.keys(bucket)), timeout=30)
        own.stop()  # the storage goes away mid-recording
        publish(broker.tcp_port, _messages(top, 50, start=100))
        time.sleep(1)
        code = recorder.stop()
    finally:
        own.stop()
    assert code == EXIT_RECORDING, recorder.stderr
    assert "50 of 150 messages not stored on object storage" in recorder.stderr, recorder.stderr
    assert "tesaiot recover" in recorder.stderr


def test_a_dataset_from_two_workers_on_a_prefix_reads_as_one(moto: Moto, broker: Mosquitto, tmp_path: Path) -> None:
    # Recorded locally by two workers, then put on the prefix as `aws s3 sync` would (recording a
    # dataset straight to s3:// is not built yet); `tesaiot info` and pyarrow.dataset read it as one.
    import pyarrow.dataset as ds  # type: ignore[import-untyped]

    bucket, top = moto.new_bucket(), _topic()
    local = tmp_path / "fleet"
    recorder = record(str(local), "--workers", "2", "--count", "240", "-b", broker.tcp_url, "-t", f"{top}/#",
                      env=clean_env())
    publish(broker.tcp_port, _messages(top, 240))
    assert recorder.wait(timeout=60) == 0, recorder.stderr
    files = sorted(local.glob("date=*/part-*.parquet"))
    assert {path.name.split("-")[2] for path in files} == {"w1", "w2"}
    s3 = moto.filesystem()
    for path in [*files, local / "_tesaiot" / "dataset.json"]:
        with open(path, "rb") as source, s3.open_output_stream(  # type: ignore[attr-defined]
                f"{bucket}/fleet/{path.relative_to(local)}") as sink:
            sink.write(source.read())
    info = run_cli("info", f"s3://{bucket}/fleet/", env=clean_env(**moto.env()))
    assert info.returncode == 0, info.stderr
    assert "240" in info.stdout and f"s3://{bucket}/fleet" in info.stdout
    table = ds.dataset(f"{bucket}/fleet", filesystem=s3, format="parquet", partitioning="hive",
                       exclude_invalid_files=True, ignore_prefixes=["_", "."]).to_table()
    assert table.num_rows == 240 and "date" in table.column_names


def test_jsonl_on_object_storage_is_written_at_close_and_read(moto: Moto, broker: Mosquitto) -> None:
    bucket, top = moto.new_bucket(), _topic()
    url = f"s3://{bucket}/run4.jsonl"
    recorder = _record(moto, broker, url, top, "--count", "30")
    publish(broker.tcp_port, _messages(top, 30))
    assert recorder.wait() == 0, recorder.stderr
    assert moto.keys(bucket) == ["run4.jsonl"]
    replay = run_cli("replay", url, "--to", "-", "--speed", "max", env=clean_env(**moto.env()))
    assert replay.returncode == 0, replay.stderr
    assert len(replay.stdout.splitlines()) == 30


def test_recorders_on_two_machines_with_one_share_group_make_one_dataset_on_a_prefix(
        moto: Moto, broker: Mosquitto) -> None:
    import pyarrow.dataset as ds

    bucket, top = moto.new_bucket(), _topic()
    url = f"s3://{bucket}/fleet"
    group = f"g{uuid.uuid4().hex[:6]}"
    first = _record(moto, broker, url, top, "--workers", "2", "--share", group)  # "machine 1": two workers
    second = _record(moto, broker, url, top, "--share", group)  # "machine 2"
    time.sleep(1)  # both subscribed (the banner is printed once connected)
    publish(broker.tcp_port, _messages(top, 300))
    time.sleep(2)
    assert first.stop() == 0, first.stderr
    assert second.stop() == 0, second.stderr
    keys = moto.keys(bucket)
    parts = [key for key in keys if key.endswith(".parquet")]
    assert "fleet/_tesaiot/dataset.json" in keys and not any("staging" in key for key in keys)
    assert all(key.startswith("fleet/date=") and "/part-" in key for key in parts)
    recorders = {key.rsplit("/", 1)[1].split("-w")[0] for key in parts}
    assert len(recorders) == 2  # one id per recorder process (host_pid_random): names never collide
    assert len({key.rsplit("/", 1)[1] for key in parts}) == len(parts)
    info = run_cli("info", url, env=clean_env(**moto.env()))
    assert info.returncode == 0, info.stderr
    assert "300" in info.stdout
    table = ds.dataset(f"{bucket}/fleet", filesystem=moto.filesystem(), format="parquet", partitioning="hive",
                       ignore_prefixes=["_", "."]).to_table()
    assert table.num_rows == 300 and "date" in table.column_names
    assert sorted(json.loads(p)["n"] for p in table.column("payload").to_pylist()) == list(range(300))
    rows = duckdb_on(moto).sql(  # the query of docs/scaling.md's walk-through, as DuckDB runs it
        f"SELECT count(*), count(DISTINCT payload), min(date) IS NOT NULL "
        f"FROM read_parquet('s3://{bucket}/fleet/**/*.parquet', hive_partitioning=true)").fetchall()
    assert rows == [(300, 300, True)]


def test_detect_score_plot_and_convert_take_s3_paths(moto: Moto, tmp_path: Path) -> None:
    bucket = moto.new_bucket()
    sample = Path(__file__).resolve().parent.parent / "recordings" / "dps368-sample.parquet"
    with open(sample, "rb") as source, moto.filesystem().open_output_stream(  # type: ignore[attr-defined]
            f"{bucket}/truth.parquet") as sink:
        sink.write(source.read())
    env = clean_env(**moto.env())
    truth, alerts = f"s3://{bucket}/truth.parquet", f"s3://{bucket}/alerts.parquet"
    detect = run_cli("detect", truth, "--to", alerts, env=env)
    assert detect.returncode == 0, detect.stderr
    score = run_cli("score", truth, "--alerts", alerts, "--json", env=env)
    assert score.returncode == 0, score.stderr
    assert json.loads(score.stdout)["detection"]["events"] > 0
    out = tmp_path / "plot.png"
    plot = run_cli("plot", truth, "-o", str(out), env=env)
    assert plot.returncode == 0, plot.stderr
    assert out.stat().st_size > 10_000
    convert = run_cli("convert", truth, f"s3://{bucket}/truth.jsonl", env=env)
    assert convert.returncode == 0, convert.stderr
    assert {"truth.parquet", "alerts.parquet", "truth.jsonl"} == set(moto.keys(bucket))


def test_a_persistent_upload_failure_stops_the_recorder_with_the_count(broker: Mosquitto) -> None:
    own = start_moto()
    bucket, top = own.new_bucket(), _topic()
    try:
        recorder = _record(own, broker, f"s3://{bucket}/run5.parquet", top, TESAIOT_S3_RETRY_S="1")
        publish(broker.tcp_port, _messages(top, 100))
        _wait_for(lambda: _a_part_and_no_upload(own.keys(bucket)), timeout=30)
        own.stop()
        publish(broker.tcp_port, _messages(top, 40, start=100))  # the next segment cannot be uploaded
        code = recorder.wait(timeout=60)  # stops by itself: no signal
    finally:
        own.stop()
        if recorder.process.poll() is None:
            recorder.process.kill()
    assert code == EXIT_RECORDING, recorder.stderr
    assert "40 of 140 messages not stored on object storage" in recorder.stderr, recorder.stderr
    assert "100 are in" in recorder.stderr and "nothing was recorded" not in recorder.stderr
    assert recorder.stderr.count("error:") == 1


def test_simulate_records_to_s3_and_an_existing_object_needs_force(moto: Moto, broker: Mosquitto) -> None:
    bucket = moto.new_bucket()
    url = f"s3://{bucket}/sim.parquet"
    env = clean_env(**moto.env())
    args = ("simulate", "-b", broker.tcp_url, "--devices", "2", "--count", "5", "--interval", "0", "--label",
            "--quiet", "--record", url)
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert moto.keys(bucket) == ["sim.parquet"]
    again = run_cli(*args, env=env)
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    forced = run_cli(*args, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    info = run_cli("info", url, "--json", env=env)
    assert json.loads(info.stdout)["messages"] == 10


def test_a_dataset_recorder_that_cannot_upload_stops_with_the_count(broker: Mosquitto) -> None:
    own = start_moto()
    bucket, top = own.new_bucket(), _topic()
    try:
        recorder = _record(own, broker, f"s3://{bucket}/ds", top, "--roll", "1", TESAIOT_S3_RETRY_S="1")
        publish(broker.tcp_port, _messages(top, 100))
        _wait_for(lambda: _a_part_and_no_upload(own.keys(bucket)), timeout=30)
        own.stop()
        publish(broker.tcp_port, _messages(top, 40, start=100))
        code = recorder.wait(timeout=60)
    finally:
        own.stop()
        if recorder.process.poll() is None:
            recorder.process.kill()
    assert code == EXIT_RECORDING, recorder.stderr
    assert "40 of 140 messages not stored on object storage" in recorder.stderr, recorder.stderr
    assert "kept locally in" in recorder.stderr and recorder.stderr.count("error:") == 1


SAMPLE = Path(__file__).resolve().parent.parent / "recordings" / "dps368-sample.parquet"


def test_export_and_plot_write_s3_outputs_once_complete_and_an_existing_object_needs_force(moto: Moto) -> None:
    bucket = moto.new_bucket()
    env = clean_env(**moto.env())
    for name in ("out.parquet", "out.csv", "out.mcap"):
        result = run_cli("export", str(SAMPLE), f"s3://{bucket}/x/{name}", env=env)
        assert result.returncode == 0, result.stderr
        assert f"-> s3://{bucket}/x/{name}" in result.stderr
    plot = run_cli("plot", str(SAMPLE), "-o", f"s3://{bucket}/x/p.png", env=env)
    assert plot.returncode == 0, plot.stderr
    assert f"written to s3://{bucket}/x/p.png" in plot.stderr
    assert moto.keys(bucket) == ["x/out.csv", "x/out.mcap", "x/out.parquet", "x/p.png"]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    info = run_cli("info", str(SAMPLE), "--json", env=env)
    assert info.returncode == 0, info.stderr
    with moto.filesystem().open_input_file(f"{bucket}/x/out.parquet") as source:  # type: ignore[attr-defined]
        assert pq.read_metadata(source).num_rows == json.loads(info.stdout)["messages"]
    with moto.filesystem().open_input_stream(f"{bucket}/x/out.csv") as source:  # type: ignore[attr-defined]
        csv_rows = source.read().decode().splitlines()
    with moto.filesystem().open_input_stream(f"{bucket}/x/p.png") as source:  # type: ignore[attr-defined]
        assert source.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(csv_rows) == json.loads(info.stdout)["messages"] + 1
    for args in (["export", str(SAMPLE), f"s3://{bucket}/x/out.csv"],
                 ["plot", str(SAMPLE), "-o", f"s3://{bucket}/x/p.png"]):
        again = run_cli(*args, env=env)
        assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
        assert "already exists" in again.stderr and "--force" in again.stderr
        forced = run_cli(*args, "--force", env=env)
        assert forced.returncode == 0, forced.stderr


def test_a_failed_s3_output_leaves_nothing_under_its_name_nor_a_local_temporary(moto: Moto, tmp_path: Path) -> None:
    bucket = moto.new_bucket()
    spool = tmp_path / "tmp"
    spool.mkdir()
    env = clean_env(**moto.env(TMPDIR=str(spool)))
    # Failing before the upload: an empty selection (exit 9) writes nothing.
    empty = run_cli("export", str(SAMPLE), f"s3://{bucket}/out.csv", "--device", "no-such-device", env=env,
                    process=True)
    assert empty.returncode == 9, empty.stderr
    # Failing in the upload: a missing bucket (--force: the upload is the first request), and
    # storage that is unreachable (retried for TESAIOT_S3_RETRY_S, then one line).
    missing = run_cli("export", str(SAMPLE), "s3://no-such-bucket-here/out.csv", "--force", env=env, process=True)
    assert missing.returncode == EXIT_RECORDING and missing.stderr.count("\n") == 1, missing.stderr
    assert "bucket 'no-such-bucket-here' does not exist" in missing.stderr
    from tests.support.broker import free_ports

    down = clean_env(**moto.env(TMPDIR=str(spool), AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_ports(1)[0]}",
                                TESAIOT_S3_RETRY_S="1"))
    for args in (["export", str(SAMPLE), f"s3://{bucket}/out.parquet", "--force"],
                 ["plot", str(SAMPLE), "-o", f"s3://{bucket}/p.svg", "--force"]):
        result = run_cli(*args, env=down, process=True)
        assert result.returncode == EXIT_RECORDING and result.stderr.count("\n") == 1, result.stderr
        assert "unreachable" in result.stderr and "attempts in 1 s" in result.stderr
    assert moto.keys(bucket) == []
    assert list(spool.iterdir()) == []  # every local temporary removed


def test_a_killed_dataset_recorder_leaves_its_open_file_s_parts_and_recover_seals_them(
        moto: Moto, broker: Mosquitto, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    bucket, top = moto.new_bucket(), _topic()
    url = f"s3://{bucket}/fleet/"
    s3 = moto.filesystem()

    def staged_rows() -> int:
        keys = [key for key in moto.keys(bucket) if key.startswith("fleet/_tesaiot/staging/") and "/part-" in key]
        rows = 0
        for key in keys:
            with s3.open_input_file(f"{bucket}/{key}") as source:  # type: ignore[attr-defined]
                rows += int(pq.read_metadata(source).num_rows)
        return rows

    recorder = _record(moto, broker, url, top, TMPDIR=str(tmp_path))  # rolls every 60 s: the file stays open
    try:
        publish(broker.tcp_port, _messages(top, 200))
        _wait_for(lambda: staged_rows() == 200, timeout=30)  # every message in an uploaded part
        keys = moto.keys(bucket)
        assert not any(key.startswith("fleet/date=") for key in keys)  # nothing sealed yet
        assert not any(key.endswith(".parquet") for key in keys)  # `**/*.parquet` globs find no staged part
    finally:
        recorder.stop(signal.SIGKILL)
    env = clean_env(**moto.env())
    before = run_cli("info", url, env=env)  # read as unsealed, the recover command named as the user would type it
    assert before.returncode == 0 and "200" in before.stdout and "NOT SEALED" in before.stdout, before.stderr
    assert f"'tesaiot recover s3://{bucket}/fleet'" in before.stderr and "/tmp" not in before.stderr
    recover = run_cli("recover", url, env=env)
    assert recover.returncode == 0, recover.stderr
    assert "sealed 200 messages" in recover.stderr, recover.stderr
    keys = moto.keys(bucket)
    assert not any("staging" in key for key in keys), keys
    assert [key for key in keys if key.endswith(".parquet")] and \
        all(key.startswith("fleet/date=") for key in keys if key.endswith(".parquet"))
    info = run_cli("info", url, "--json", env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["messages"] == 200
    again = run_cli("recover", url, env=env)
    assert again.returncode == 0 and "nothing to recover" in again.stderr, again.stderr


_INTERRUPTED_UPLOAD = """
import os, signal, sys, threading, time
from pathlib import Path
from tesaiot_cli.recording import storage

signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's child inherits SIGINT ignored
storage.configure_environment(os.environ)
fifo = Path(sys.argv[1])
os.mkfifo(fifo)

def feed():
    with open(fifo, "wb") as pipe:
        pipe.write(b"x" * 1000)  # a part of the file: the upload has begun
        pipe.flush()
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C while the rest is still to come
        time.sleep(5)

threading.Thread(target=feed, daemon=True).start()
try:
    storage.upload(fifo, storage.location(sys.argv[2]), chunk=1000)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_an_upload_interrupted_by_ctrl_c_leaves_nothing_under_the_key(moto: Moto, tmp_path: Path) -> None:
    # pyarrow's output stream completes its upload when closed, also on an exception: the bytes
    # go to a temporary key and are copied to the final one only once whole.
    import subprocess
    import sys

    bucket = moto.new_bucket()
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_UPLOAD, str(tmp_path / "fifo"), f"s3://{bucket}/run.parquet"],
                          env=clean_env(**moto.env()), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "interrupted", (done.returncode, done.stderr)
    assert moto.keys(bucket) == []  # neither the part under the final name nor the temporary object


def test_a_temporary_upload_the_store_will_not_delete_is_said(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential that may write but not delete (a common write-only policy): the object is
    stored whole and the command succeeds, but the hidden temporary it was uploaded through
    stays on the store, so the command says which one, as a warning, instead of nothing."""
    bucket = moto.new_bucket()
    sample = Path(__file__).resolve().parent.parent / "recordings" / "dps368-sample.parquet"
    real = storage.filesystem

    class NoDelete:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def delete_file(self, path: str) -> None:
            if storage.UPLOADING in path:
                raise OSError("When deleting key: AWS Error ACCESS_DENIED during DeleteObject operation: Access Denied")
            self.inner.delete_file(path)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    monkeypatch.setattr(storage, "filesystem", lambda: NoDelete(real()))
    result = run_cli("convert", str(sample), f"s3://{bucket}/run.parquet", env=clean_env(**moto.env()))
    assert result.returncode == 0, result.stderr
    leftovers = [key for key in moto.keys(bucket) if storage.UPLOADING in key]
    assert "run.parquet" in moto.keys(bucket) and len(leftovers) == 1
    warning = [line for line in result.stderr.splitlines() if "could not delete the temporary upload" in line]
    assert len(warning) == 1 and leftovers[0] in warning[0] and "refused the credentials" in warning[0], result.stderr
    assert storage.left_behind() == []  # said once, then forgotten
