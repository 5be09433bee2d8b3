"""Number and text formatting shared by the HTML, Markdown and JUnit renderers.

Every function accepts anything a result document may hold where a number is expected (int,
float, None, NaN, a string written by a newer producer) and never raises: a value that is not a
finite number prints as an em dash, so a report with holes still renders.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

MISSING = "—"


def as_number(value: Any) -> float | None:
    """The value as a finite float, or None. Booleans are not numbers here."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def num(value: Any, sig: int = 3) -> str:
    """A number with about `sig` significant digits, readable rather than exact.

    Large magnitudes keep all their integer digits with thousands separators (50,000 rather than
    5e+04): a row count or a watch time in seconds should never be shown rounded to "5.0e4".
    Very small ones switch to scientific notation so that 0.00001234 does not print as 0.0000.
    """
    number = as_number(value)
    if number is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if number == 0:
        return "0"
    # Round to the significant digits first: rounding can carry into a new digit (99.96 -> 100),
    # which changes how many decimals are left to show.
    rounded = float(f"{number:.{sig - 1}e}")
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude >= sig - 1:
        return f"{number:,.0f}"
    if magnitude < -4:
        return f"{number:.{sig - 1}e}"
    return f"{rounded:,.{sig - 1 - magnitude}f}"


def signed(value: Any, sig: int = 3) -> str:
    """Like num, with an explicit sign: used for differences, where the sign is the message."""
    number = as_number(value)
    if number is None:
        return MISSING
    text = num(number, sig)
    return text if text.startswith("-") or text == "0" else "+" + text


def pct(value: Any, sig: int = 3, sign: bool = False) -> str:
    """A fraction as a percentage (0.0123 -> 1.23%)."""
    number = as_number(value)
    if number is None:
        return MISSING
    text = (signed if sign else num)(number * 100, sig)
    return text + "%"


def interval(low: Any, high: Any, sig: int = 3) -> str:
    """A confidence interval as [low, high]; a missing bound prints as a dash, not as a crash."""
    if as_number(low) is None and as_number(high) is None:
        return MISSING
    return f"[{num(low, sig)}, {num(high, sig)}]"


def pvalue(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return MISSING
    if number < 0.001:
        return "<0.001"
    return f"{number:.3f}"


def confidence(alpha: Any) -> str:
    """The confidence level for an alpha, as a label such as "95%"."""
    number = as_number(alpha)
    if number is None or not 0 < number < 1:
        return "confidence"
    return level(1 - number)


def level(value: Any) -> str:
    """A confidence level (0.9875) as "98.75%"; trailing zeros dropped."""
    number = as_number(value)
    if number is None:
        return "—"
    text = f"{number * 100:.2f}".rstrip("0").rstrip(".")
    return text + "%"


def plain(value: Any) -> str:
    """A setting-like number (alpha, a threshold) without padding zeros: 0.05, -0.01, -0.007989."""
    text = num(value, 4)
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def when(value: Any) -> str:
    """An ISO timestamp as "2026-01-05 00:00 UTC"; anything unparseable is shown as given."""
    if value is None:
        return MISSING
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    offset = moment.utcoffset()
    zone = "" if offset is None else " UTC" if offset == timedelta(0) else moment.strftime(" %z")
    seconds = ":%S" if moment.second else ""
    return moment.strftime(f"%Y-%m-%d %H:%M{seconds}") + zone


def span(start: Any, end: Any) -> str:
    """A time window compactly: dates alone when it runs midnight to midnight, else date and time;
    the zone is named only when it is not UTC (the table header says UTC)."""
    try:
        first = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        last = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return f"{text(start)} to {text(end)}"
    zone = "" if first.utcoffset() in (None, timedelta(0)) else first.strftime(" %z")
    if first.time() == last.time() == datetime.min.time():
        return f"{first:%Y-%m-%d} – {last:%Y-%m-%d}{zone}"
    end_format = "%H:%M" if first.date() == last.date() else "%Y-%m-%d %H:%M"
    return f"{first:%Y-%m-%d %H:%M} – {last.strftime(end_format)}{zone}"


def sentence(value: Any) -> str:
    """Text from a document as a sentence: first letter upper-cased, the rest untouched."""
    text = "" if value is None else str(value).strip()
    return text[:1].upper() + text[1:]


def text(value: Any) -> str:
    """Any value as display text; None becomes the dash."""
    if value is None:
        return MISSING
    return str(value)
