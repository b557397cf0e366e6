"""Each command's run, end to end, behind a typed options object and a result object: the
recorder (:mod:`~tesaiot_cli.services.recorder`, in one process and in each ``record
--workers`` process, :mod:`~tesaiot_cli.services.workers`), the simulator, the replayer,
the live detector, watch's loop, the embedded broker; the one wait for in-flight messages
after a stop (:mod:`~tesaiot_cli.services.drain`). Never prints: the commands do."""
