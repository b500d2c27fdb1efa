"""Rendering reports and invoices for people and machines; no I/O beyond the stream given.

* ``table`` — rich tables for people: aligned, with totals; names are never read as markup.
* ``json``  — machines: money as exact decimal strings (never floats); streamed arrays.
* ``csv``   — machines and spreadsheets: cells that a spreadsheet would run as a formula
  (``=``, ``+``, ``-``, ``@`` at the start or after any ``,`` ``;`` tab ``|`` CR LF; a
  leading tab, CR, LF) are neutralised with a leading ``'``.
* ``html``  — self-contained pages (inline CSS and SVG, no network), everything escaped.
* ``pdf``   — a real PDF (fpdf2), with a Unicode font when one is available.
* ``safe``  — nothing printed to a terminal carries a control character from the data.
"""

from __future__ import annotations

from decimal import Decimal

from ..money import money_str


def dollars(value: Decimal) -> str:
    """``$1.50``, ``-$3.67``: the exact amount with its sign before the dollar sign
    (``copy_abs``, not ``abs()``: the latter rounds to the caller's decimal context)."""
    return ("-$" if value < 0 else "$") + money_str(value.copy_abs())
