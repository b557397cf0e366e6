"""``tesaiot watch``: a live full-screen view of a fleet's telemetry.

``model.py`` holds the state (per-device statistics, sparkline windows, sort and filter),
pure, on an injected clock; ``state.py`` the keys and what they change on screen;
``view.py`` turns both into what the terminal shows (rich text). The run loop is
:mod:`tesaiot_cli.services.watch`; the command is :mod:`tesaiot_cli.commands.watch`.
"""
