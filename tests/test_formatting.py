"""The one way numbers are written (``crlm.reporting.formatting``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crlm.reporting.formatting import (
    MISSING_TEXT,
    format_estimate,
    format_interval,
    format_number,
    format_p,
    headline_horizon,
    horizon_key,
)


def test_headline_horizon_is_36_months_else_the_last():
    assert headline_horizon([12.0, 36.0, 60.0]) == 36.0
    assert headline_horizon((12, 36)) == 36.0
    assert headline_horizon([12.0, 24.0]) == 24.0  # 36 not evaluated: the last usable horizon
    assert headline_horizon(np.array([6.0, 12.0, 60.0])) == 60.0
    assert horizon_key("ici", [12.0, 36.0, 60.0]) == "ici_36" and horizon_key("oe", [12, 24]) == "oe_24"
    with pytest.raises(ValueError, match="no evaluated horizon"):
        headline_horizon([])


@pytest.mark.parametrize("low, high", [(0.68, 0.745), (-0.0123, 0.0456), (-0.5, -0.25)])
def test_interval_reads_back_its_bounds(low, high):
    text = format_interval(low, high)
    assert text.startswith("(") and text.endswith(")")
    parsed = [float(x) for x in text.strip("()").split(", ")]  # a comma, so negative bounds parse
    assert parsed == pytest.approx([low, high], abs=5e-4)
    assert format_interval(low, high, enclose="[]") == "[" + text[1:-1] + "]"
    assert format_interval(low, high, enclose="") == text[1:-1]
    assert format_interval(low, high, digits=1).count(".") == 2


@pytest.mark.parametrize("missing", [None, math.nan, np.float64("nan")])
def test_unknown_values_stay_unknown(missing):
    assert format_number(missing) == MISSING_TEXT
    assert format_interval(missing, 0.5) == "" and format_interval(0.5, missing) == ""
    assert format_estimate(missing, 0.1, 0.2) == MISSING_TEXT  # no interval around an unknown estimate
    assert format_estimate(0.7, missing, missing) == "0.700"
    assert format_p(missing) == MISSING_TEXT and format_p(missing, 200, missing="–") == "–"


def test_estimate_lies_inside_its_printed_interval():
    text = format_estimate(0.7123, 0.6801, 0.7456)
    estimate, interval = text.split(" ", 1)
    low, high = (float(x) for x in interval.strip("()").split(", "))
    assert low <= float(estimate) <= high and estimate == format_number(0.7123)


def test_p_values():
    assert format_p(0.0123) == "p = 0.012" and format_p(0.0004) == "p < 0.001"
    # a bootstrap p-value below 2 / n_boot cannot be resolved: it is written as that bound
    assert format_p(0.0, n_boot=200) == "<0.01" and format_p(0.05, n_boot=200) == "0.05"
    assert format_p(0.0, n_boot=1000) == "<0.002"
    assert format_p(0.2345, n_boot=200) == "0.23"
