"""Orchestration that uses both the MQTT session and recordings: the recorder flow
(:mod:`~tesaiot_cli.services.recorder`), run by ``record`` in one process and by each
``record --workers`` process (:mod:`~tesaiot_cli.services.workers`). Never prints."""
