"""Playback: which messages a command takes and when each one is due.

``selection`` (``--topic``, ``--device``, ``--start/--end``: a filter, and what an index
can prove it excludes; the recording readers take it), ``pacing`` (the one wait-until-due
loop and the lateness histogram, shared by the replay and simulate schedules), ``replay``
(replay's options, rewriting and scheduler). Pure: no printing, no MQTT, no files.
"""
