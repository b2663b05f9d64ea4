"""The three modalities, named by one letter: ``"T"`` text, ``"A"`` audio, ``"V"`` vision.

Every layer of the library speaks of modalities, so their names live at the bottom, beside the
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

MODALITIES = ("T", "A", "V")
MODALITY_NAMES = {"T": "text", "A": "audio", "V": "vision"}


def parse_modalities(modalities: str | Sequence[str], min_count: int = 1) -> tuple[str, ...]:
    """Normalise ``"TAV"``, ``"AT"`` or ``["T", "V"]`` to canonical order ``("T", "A", "V")``."""
    letters = [m.upper() for m in modalities]
    unknown = sorted(set(letters) - set(MODALITIES))
    if unknown or len(set(letters)) != len(letters) or len(letters) < min_count:
        raise ValueError(
            f"modalities must be {min_count} or more distinct letters out of 'TAV' "
            f"(T text, A audio, V vision), got {modalities!r}"
        )
    return tuple(m for m in MODALITIES if m in letters)
