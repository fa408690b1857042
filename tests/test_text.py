"""Text facts shared by every wing: commit ids, one-line messages, what a terminal shows."""

from __future__ import annotations

import pytest

from deployhook.errors import InvalidRequest
from deployhook.text import check_sha, for_terminal, one_line

ESC = "\x1b"


@pytest.mark.parametrize(
    ("raw", "colours", "shown"),
    [
        (f"{ESC}[31mred{ESC}[0m", True, f"{ESC}[31mred{ESC}[0m"),
        (f"{ESC}[31mred{ESC}[0m", False, "red"),
        (f"a{ESC}[2J{ESC}[Hb", True, "ab"),  # clear screen, cursor home
        (f"{ESC}]0;owned title\x07x", True, "x"),  # set the window title
        (f"{ESC}]52;c;cHduZWQ=\x07x", True, "x"),  # write the clipboard
        (f"{ESC}]8;;http://evil{ESC}\\link{ESC}]8;;{ESC}\\", True, "link"),  # a hyperlink
        ("bell\x07 back\x08 cr\r tab\tnl\n", True, "bell back cr tab\tnl\n"),
        ("\x9b2Jone-byte CSI", True, "one-byte CSI"),
        (f"{ESC}[1;32;48;5;17mrich{ESC}[m", True, f"{ESC}[1;32;48;5;17mrich{ESC}[m"),
    ],
)
def test_for_terminal_keeps_only_colours_and_only_when_asked(
    raw: str, colours: bool, shown: str
) -> None:
    """Trust finding 6: `deployhook logs` printed a stack's raw escape sequences."""
    assert for_terminal(raw, colours=colours) == shown


def test_check_sha_accepts_full_ids_only() -> None:
    assert check_sha(" " + "A" * 40 + " ") == "a" * 40
    assert check_sha("b" * 64) == "b" * 64
    for bad in ("a" * 39, "g" * 40, "a" * 41, "-" + "a" * 39, ""):
        with pytest.raises(InvalidRequest):
            check_sha(bad)


def test_one_line_joins_and_cuts() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 10, limit=5) == "xxxx…"
