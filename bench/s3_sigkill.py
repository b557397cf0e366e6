"""What a SIGKILL loses when recording to s3:// (docs/reliability.md, "Object storage").

Starts mosquitto and moto from tests/support, records ``s3://BUCKET/k.parquet`` while a paho
client publishes about 200 msg/s at QoS 1, kills the recorder with SIGKILL after 8.0, 10.3
and 12.6 s, runs ``tesaiot recover``, and prints how long before the kill the newest kept
message arrived. Run: ``.venv/bin/python bench/s3_sigkill.py`` (about a minute; loopback only);
``--dataset``: the same for a dataset on a prefix (``s3://BUCKET/ds/``, rolled every 60 s).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho  # noqa: E402
import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from tests.support.broker import start_mosquitto  # noqa: E402
from tests.support.cli import clean_env, cli_command  # noqa: E402
from tests.support.s3 import start_moto  # noqa: E402


def one_run(moto: object, broker: object, kill_after_s: float, *, dataset: bool = False) -> str:
    bucket = moto.new_bucket()  # type: ignore[attr-defined]
    url = f"s3://{bucket}/ds/" if dataset else f"s3://{bucket}/k.parquet"
    env = clean_env(**moto.env())  # type: ignore[attr-defined]
    recorder = subprocess.Popen(cli_command("record", url, "-b", broker.tcp_url, "-t", "kill/#"),  # type: ignore[attr-defined]
                                env=env, stderr=subprocess.PIPE, text=True)
    assert recorder.stderr is not None
    deadline = time.monotonic() + 30
    while "recording mqtt" not in recorder.stderr.readline() and time.monotonic() < deadline:
        pass
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.tcp_port)  # type: ignore[attr-defined]
    client.loop_start()
    start, sent = time.monotonic(), 0
    while time.monotonic() - start < kill_after_s:
        client.publish("kill/x", json.dumps({"n": sent}), 1)
        sent += 1
        time.sleep(0.005)
    recorder.send_signal(signal.SIGKILL)
    killed_ns = time.time_ns()
    recorder.wait()
    client.loop_stop()
    subprocess.run(cli_command("recover", url), env=env, capture_output=True, timeout=60, check=True)
    if dataset:
        import pyarrow.dataset as ds  # type: ignore[import-untyped]

        table = ds.dataset(f"{bucket}/ds", filesystem=moto.filesystem(), format="parquet",  # type: ignore[attr-defined]
                           partitioning="hive", ignore_prefixes=["_", "."]).to_table()
    else:
        table = pq.read_table(f"{bucket}/k.parquet", filesystem=moto.filesystem())  # type: ignore[attr-defined]
    newest = max(table.column("time").cast("int64").to_pylist())
    return (f"SIGKILL after {kill_after_s:.1f} s: published {sent}, kept {table.num_rows}, newest kept message "
            f"{(killed_ns - newest) / 1e9:.2f} s before the kill")


def main() -> None:
    moto = start_moto()
    broker = start_mosquitto(Path(tempfile.mkdtemp()))
    try:
        for kill_after_s in (8.0, 10.3, 12.6):
            print(one_run(moto, broker, kill_after_s, dataset="--dataset" in sys.argv[1:]), flush=True)
    finally:
        moto.stop()
        broker.close()


if __name__ == "__main__":
    main()
