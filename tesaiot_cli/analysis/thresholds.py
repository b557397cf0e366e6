"""``score --fail-under``: the thresholds a CI pipeline sets, and which of them a score missed.

Pure: text in, a mapping out; scores in, the unmet thresholds as texts out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tesaiot_cli.analysis.nab import NabScore
    from tesaiot_cli.analysis.score import DeliveryScore, DetectionScore

RATIO_NAMES = ("precision", "recall", "f1", "delivered")
# NAB's normalised score (standard profile), 100 = perfect, 0 = the null detector.
NAB_NAME = "nab"
THRESHOLD_NAMES = (*RATIO_NAMES, NAB_NAME)


def parse_thresholds(text: str) -> dict[str, float]:
    """``f1=0.9,recall=0.95,nab=60`` -> {"f1": 0.9, "recall": 0.95, "nab": 60.0}.

    A ratio is between 0 and 1; ``nab`` is at most 100. Raises ValueError with a reason.
    """
    result: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip().lower()
        if not sep or name not in THRESHOLD_NAMES:
            raise ValueError(f"{part.strip()!r}: use NAME=VALUE with NAME one of {', '.join(THRESHOLD_NAMES)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{part.strip()!r}: {value.strip()!r} is not a number") from None
        if name == NAB_NAME:
            if not number <= 100.0:
                raise ValueError(f"{part.strip()!r}: a NAB score is at most 100")
        elif not 0.0 <= number <= 1.0:
            raise ValueError(f"{part.strip()!r}: a ratio is between 0 and 1")
        result[name] = number
    return result


def unmet_thresholds(thresholds: dict[str, float], detection: DetectionScore | None,
                     delivery: DeliveryScore | None, nab: NabScore | None = None) -> list[str]:
    """The thresholds not met, as ``name value < threshold`` texts (a missing value fails)."""
    values: dict[str, float | None] = {}
    if detection is not None:
        values["precision"] = detection.overall.precision
        values["recall"] = detection.overall.recall
        values["f1"] = detection.overall.f1
    if delivery is not None:
        values["delivered"] = delivery.delivered
    if nab is not None:
        values[NAB_NAME] = nab.profiles["standard"].score
    failed = []
    for name, threshold in thresholds.items():
        value = values.get(name)
        if value is None or value < threshold:
            shown = "n/a" if value is None else (f"{value:.2f}" if name == NAB_NAME else f"{value:.3f}")
            failed.append(f"{name} {shown} < {threshold:g}")
    return failed
