"""Whether a cohort is real or simulated, and the label a simulated cohort's model carries wherever its numbers
appear (the API's answer, the calculator, the model card)."""

from __future__ import annotations

__all__ = ["DEMONSTRATION_LABEL", "is_simulated"]

DEMONSTRATION_LABEL = "demonstration: trained on simulated patients"


def is_simulated(*descriptions: str | None) -> bool:
    """True when a cohort's name, source or licence says it is simulated or synthetic.

    Parameters
    ----------
    *descriptions : str or None
        The cohort's name, source, licence (any of them may be missing).

    Returns
    -------
    bool
    """
    text = " ".join(d for d in descriptions if d).lower()
    return "simulat" in text or "synthetic" in text
