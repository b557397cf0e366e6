"""How a message is shown: ``render`` (the human block, the NDJSON record of ``listen
--json`` and ``replay --to -``, ``-F`` templates and mosquitto_sub's own format). Pure."""
