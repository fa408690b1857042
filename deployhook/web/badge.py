"""The status badge: an SVG in the familiar two-part style ("deploy | succeeded")."""

from __future__ import annotations

from markupsafe import escape

WARNING = "#fe7d37"  # shields.io's orange: deployed, but not what was pushed last
COLOURS = {
    "succeeded": "#4c1",
    "failed": "#e05d44",
    "running": "#007ec6",
    "queued": "#dfb317",
    "rolled back": WARNING,
    "cancelled": "#7d7d7d",
    "interrupted": "#7d7d7d",
    "skipped": "#9f9f9f",
    "never": "#9f9f9f",
}
LABEL_COLOUR = "#555"
UNKNOWN_COLOUR = "#9f9f9f"

# Advance widths of Verdana at 11 px (the font these badges are drawn in), so the
# boxes fit their text without a font at hand. Anything else counts as a wide letter.
_WIDTHS: dict[str, float] = {
    **dict.fromkeys("ijl.,:;'!|", 3.1),
    **dict.fromkeys("ft()[]", 4.3),
    **dict.fromkeys("r-", 4.7),
    " ": 3.9,
    "I": 4.3,
    **dict.fromkeys("acesvxyz", 6.0),
    **dict.fromkeys("bdghknopqu", 7.0),
    **dict.fromkeys("0123456789", 7.0),
    "m": 10.7,
    "w": 9.0,
    **dict.fromkeys("ABCDEFGHJKLNOPQRSTUVXYZ", 7.6),
    "M": 8.6,
    "W": 11.0,
}
_WIDE = 7.6
_PAD = 6


def text_width(text: str) -> int:
    return round(sum(_WIDTHS.get(ch, _WIDE) for ch in text))


def render(message: str, *, label: str = "deploy") -> str:
    """Return the SVG text of a badge; colour by message (a repo state, as people read it)."""
    colour = COLOURS.get(message, UNKNOWN_COLOUR)
    left = text_width(label) + 2 * _PAD
    right = text_width(message) + 2 * _PAD
    total = left + right
    lab, msg = escape(label), escape(message)
    # Text is drawn at 10x and scaled down, as shields.io does, for crisp kerning.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img"'
        f' aria-label="{lab}: {msg}"><title>{lab}: {msg}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb"'
        ' stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,'
        'sans-serif" text-rendering="geometricPrecision" font-size="110">'
        f'<text aria-hidden="true" x="{left * 5}" y="150" fill="#010101" fill-opacity=".3"'
        f' transform="scale(.1)">{lab}</text>'
        f'<text x="{left * 5}" y="140" transform="scale(.1)">{lab}</text>'
        f'<text aria-hidden="true" x="{left * 10 + right * 5}" y="150" fill="#010101"'
        f' fill-opacity=".3" transform="scale(.1)">{msg}</text>'
        f'<text x="{left * 10 + right * 5}" y="140" transform="scale(.1)">{msg}</text>'
        "</g></svg>"
    )
