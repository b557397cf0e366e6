"""scripts/lowest-versions.txt names the lower bound of every runtime range the project declares.

In every environment: each runtime requirement (core, broker, plot, mcap) has a lower bound and
the file pins exactly that version, so the lowest-versions leg of scripts/test cannot drift from
pyproject.toml. In that leg (TESAIOT_LOWEST=core or broker, set by scripts/test) the installed
versions are checked too, so the leg cannot pass on versions other than the ones it names.
"""

from __future__ import annotations

import os
from importlib.metadata import requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

LOWEST_FILE = Path(__file__).resolve().parent.parent / "scripts" / "lowest-versions.txt"
RUNTIME_EXTRAS = ("broker", "plot", "mcap")


def _runtime_requirements() -> dict[str, Requirement]:
    """The installed project's core and runtime-extra requirements, by normalised name."""
    found: dict[str, Requirement] = {}
    for line in requires("tesaiot-cli") or []:
        requirement = Requirement(line)
        marker = str(requirement.marker) if requirement.marker else ""
        if marker and not any(f'extra == "{extra}"' in marker for extra in RUNTIME_EXTRAS):
            continue
        found[requirement.name.lower()] = requirement
    return found


def _pinned() -> dict[str, Version]:
    """name -> version for each `name==version` line of scripts/lowest-versions.txt."""
    pins: dict[str, Version] = {}
    for raw in LOWEST_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = Version(pinned.strip())
    return pins


def _lower_bound(requirement: Requirement) -> Version:
    bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(bounds) == 1, f"{requirement}: every runtime range needs one >= lower bound"
    return bounds[0]


def test_the_file_pins_exactly_the_declared_lower_bounds() -> None:
    declared = {name: _lower_bound(requirement) for name, requirement in _runtime_requirements().items()}
    assert set(declared) >= {"typer", "rich", "paho-mqtt", "python-dotenv", "orjson", "pyarrow", "amqtt", "matplotlib",
                             "mcap"}
    assert _pinned() == declared


def test_the_leg_runs_on_the_pinned_versions() -> None:
    leg = os.environ.get("TESAIOT_LOWEST", "")
    if not leg:  # any other environment: at least inside every declared range
        for name, requirement in _runtime_requirements().items():
            assert requirement.specifier.contains(version(name), prereleases=True), f"{name} {version(name)}"
        return
    pins = _pinned()
    if leg == "broker":
        # amqtt's own lower bound for typer is above ours: the leg takes that one.
        amqtt_typer = next(Requirement(line) for line in requires("amqtt") or [] if Requirement(line).name == "typer")
        pins["typer"] = max(pins["typer"], _lower_bound(amqtt_typer))
    else:
        del pins["amqtt"]
    installed = {name: Version(version(name)) for name in pins}
    assert installed == pins
