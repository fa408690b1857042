"""What a release ships agrees with itself: one version, the image's pins, the license."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import deployhook

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_has_one_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project, "pyproject.toml: the version lives in deployhook/__init__.py"
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "deployhook.__version__"}
    # What pip installed (and `deployhook --version` prints) came from that attribute.
    assert importlib.metadata.version("deployhook") == deployhook.__version__


def test_image_constraints_pin_every_dependency_inside_its_range() -> None:
    pins: dict[str, str] = {}
    for raw in (ROOT / "image" / "constraints.txt").read_text().splitlines():
        line = raw.partition("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    project = PYPROJECT["project"]
    # The image installs "/src[postgres]" with these constraints.
    for spec in project["dependencies"] + project["optional-dependencies"]["postgres"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"image/constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"image/constraints.txt pins {req.name}=={pins[name]}, outside {req.specifier}"
        )


def test_changelog_has_unreleased_and_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert headings[:1] == ["Unreleased"], "CHANGELOG.md: ## [Unreleased] comes first"
    assert deployhook.__version__ in headings, (
        f"CHANGELOG.md has no section ## [{deployhook.__version__}] for __version__"
    )


def test_license_is_mit_everywhere() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert 'org.opencontainers.image.licenses="MIT"' in (ROOT / "Dockerfile").read_text()
