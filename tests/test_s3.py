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
from tests.support.s3 import Moto, start_moto


def _topic() -> str:
    return f"s3test/{uuid.uuid4().hex[:8]}"


def _record(moto: Moto, broker: Mosquitto, url: str, top: str, *args: str, **extra: str) -> Proc:
    extra.setdefault("TESAIOT_S3_SEGMENT_S", "1")  # a segment a second (default 5): shorter tests
    return record(url, "-b", broker.tcp_url, "-t", f"{top}/#", *args, env=clean_env(**moto.env(**extra)))


def _messages(top: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{top}/d{i % 3}/telemetry", json.dumps({"n": i}).encode()) for i in range(start, start + count)]


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
        _wait_for(lambda: any("/part-" in key for key in own.keys(bucket)), timeout=30)
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
        _wait_for(lambda: any("/part-" in key for key in own.keys(bucket)), timeout=30)
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
        _wait_for(lambda: any("/part-" in key for key in own.keys(bucket)), timeout=30)
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


def test_export_and_plot_outputs_on_s3_are_refused_in_one_line(moto: Moto) -> None:
    env = clean_env(**moto.env())
    for args in (["export", "recordings/dps368-sample.parquet", "s3://bucket/out.csv"],
                 ["plot", "recordings/dps368-sample.parquet", "-o", "s3://bucket/out.png"]):
        result = run_cli(*args, env=env, cwd=Path(__file__).resolve().parent.parent)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert "s3://bucket/out." in result.stderr and "local" in result.stderr
