"""contrib/deployhook.service: what systemd says of it, and what it must keep saying."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "deployhook.service"
EXEC_START = "ExecStart=/opt/deployhook/bin/deployhook serve"


def directives(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (a key may repeat, as Environment= does)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def one(units: dict[str, list[str]], key: str) -> str:
    values = units.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


def verify(tmp_path: Path, text: str) -> list[str]:
    """systemd-analyze verify on a copy whose ExecStart is this venv's deployhook.

    verify exits 0 for most mistakes (an unknown key, an unparsable value) and only says
    them: its lines about the unit are returned, for the caller to require none.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/install-system.sh installs systemd)")
    deployhook = Path(sys.executable).parent / "deployhook"
    assert deployhook.is_file(), f"{deployhook} missing: install deployhook in this venv"
    assert EXEC_START in text
    copy = tmp_path / "deployhook.service"
    copy.write_text(text.replace(EXEC_START, f"ExecStart={deployhook} serve"))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    said = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(copy) in line or "deployhook.service" in line
    ]
    if result.returncode != 0:
        said.append(f"exit code {result.returncode}: {result.stderr.strip()}")
    return said


def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    assert verify(tmp_path, UNIT.read_text()) == []


@pytest.mark.parametrize(
    ("line", "mistake"),
    [
        ("KillMode=mixed", "KillMode=mixd"),
        ("LimitNOFILE=65536", "LimitNOFIL=65536"),
        ("NoNewPrivileges=yes", "NoNewPrivileges=perhaps"),
    ],
)
def test_verify_catches_a_mistake(tmp_path: Path, line: str, mistake: str) -> None:
    text = UNIT.read_text()
    assert line in text
    said = verify(tmp_path, text.replace(line, mistake))
    assert said, f"systemd-analyze verify said nothing of {mistake!r}"


def test_unit_settings_fit_deployhook() -> None:
    unit = directives(UNIT.read_text())
    # Ordered after the network is up AND pulling that target in (After= alone does not).
    assert "network-online.target" in one(unit, "Unit.Wants").split()
    assert {"network-online.target", "docker.service"} <= set(one(unit, "Unit.After").split())
    assert one(unit, "Service.ExecStart") == EXEC_START.partition("=")[2]
    assert one(unit, "Service.User") == "deployhook"
    assert one(unit, "Service.EnvironmentFile") == "-/etc/deployhook/deployhook.env"
    assert one(unit, "Service.Restart") == "on-failure"
    assert one(unit, "Service.KillMode") == "mixed"
    assert int(one(unit, "Service.LimitNOFILE")) >= 65536
    assert one(unit, "Service.NoNewPrivileges") == "yes"
    # strict would make the checkouts (/opt/websites, /srv, ...) read-only.
    assert one(unit, "Service.ProtectSystem") in {"yes", "full"}
    assert "ProtectHome" not in {key.partition(".")[2] for key in unit}
    # serve waits DEPLOYHOOK_STOP_GRACE plus 30 s for its worker (deployhook/server.py)
    # before it kills it; systemd must wait longer than that.
    env = dict(v.partition("=")[::2] for v in unit["Service.Environment"])
    grace = int(env["DEPLOYHOOK_STOP_GRACE"])
    assert int(one(unit, "Service.TimeoutStopSec")) > grace + 30
    assert env["DEPLOYHOOK_DATA_DIR"] == f"/var/lib/{one(unit, 'Service.StateDirectory')}"


def test_install_docs_point_at_the_shipped_unit() -> None:
    docs = (ROOT / "docs" / "install.md").read_text()
    assert "contrib/deployhook.service" in docs
    # An inline copy would drift from the shipped file.
    assert not re.search(r"^\[Service\]$", docs, flags=re.MULTILINE)
