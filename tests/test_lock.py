"""The lock files (``locks/setup.txt`` for scripts/setup.sh, ``locks/image.txt`` for the image)
agree with what pyproject.toml declares: written from the current inputs (the digest in their
header), every declared requirement pinned at a version its specifier admits, every pin with
its files' hashes, and the torch pair where it belongs. Stale: run ``scripts/lock.sh``."""

from __future__ import annotations

import importlib.util
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"setup.txt": ("llm", "test"), "image.txt": ("llm",)}   # lock -> the extras it covers
TORCH_FAMILY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def lock_digest():
    spec = importlib.util.spec_from_file_location("lock_digest", ROOT / "scripts" / "lock_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_lock(text: str) -> tuple[dict[str, str], dict[str, list[tuple[Version, Marker | None, int]]]]:
    """(header fields, name -> [(pinned version, marker, number of hashes)]) of a hash-pinned requirements file."""
    header = dict(m.groups() for m in re.finditer(r"^# ([\w-]+): (\S+)$", text, re.M))
    pins: dict[str, list] = {}
    for entry in re.split(r"\n(?=\S)", re.sub(r"^#.*\n", "", text, flags=re.M).strip()):
        line = entry.replace("\\\n", " ")
        spec, *hashes = line.split("--hash=")
        req = Requirement(spec.strip())
        (pin,) = req.specifier
        assert pin.operator == "==", f"{entry.splitlines()[0]}: not pinned with =="
        pins.setdefault(canonicalize_name(req.name), []).append((Version(pin.version), req.marker, len(hashes)))
    return header, pins


def declared(root: Path, extras) -> list[Requirement]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]
    return [Requirement(line) for line in lines]


def lock_problems(root: Path) -> list[str]:
    """Every way the locks under ``root`` disagree with its pyproject.toml and torch pair."""
    problems = []
    digest = lock_digest().digest(root)
    pair = {canonicalize_name(r.name): r for r in (Requirement(line) for line in
            (root / "locks" / "torch-pair.txt").read_text().splitlines() if line.strip() and not line.startswith("#"))}
    for name, extras in LOCKS.items():
        header, pins = parse_lock((root / "locks" / name).read_text())
        if header.get("inputs-sha256") != digest:
            problems.append(f"locks/{name} was written from other inputs than pyproject.toml and locks/torch-pair.txt "
                            "now hold: run scripts/lock.sh")
        for req in declared(root, extras):
            key = canonicalize_name(req.name)
            if name == "image.txt" and key in pair:
                continue            # the base image's
            if key not in pins:
                problems.append(f"locks/{name}: {req} is declared but not locked")
            for version, _, _ in pins.get(key, []):
                if not req.specifier.contains(version, prereleases=True):
                    problems.append(f"locks/{name}: {req.name}=={version} does not satisfy the declared {req}")
        for key, entries in pins.items():
            if any(n == 0 for _, _, n in entries):
                problems.append(f"locks/{name}: {key} has no --hash")
        if name == "setup.txt":
            for key, req in pair.items():
                if [str(v) for v, _, _ in pins.get(key, [])] != [str(next(iter(req.specifier)).version)]:
                    problems.append(f"locks/setup.txt does not pin {req} (locks/torch-pair.txt)")
        else:
            heavy = sorted(k for k in pins if k in pair or (TORCH_FAMILY.match(k) and k != "triton"))
            if heavy:
                problems.append(f"locks/image.txt holds the base image's torch packages {heavy}")
    return problems


def test_locks_match_pyproject():
    assert lock_problems(ROOT) == []


def test_a_changed_requirement_makes_the_locks_stale(tmp_path):
    """The check above can fail: on a copy whose pyproject.toml asks for a transformers the
    locks do not hold, it names the stale digest and the unsatisfied pin, for both locks."""
    (tmp_path / "locks").mkdir()
    for name in ("setup.txt", "image.txt", "torch-pair.txt"):
        shutil.copy(ROOT / "locks" / name, tmp_path / "locks" / name)
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"transformers>=[^"]+"', text)
    (tmp_path / "pyproject.toml").write_text(re.sub(r'"transformers>=[^"]+"', '"transformers>=99"', text))
    problems = lock_problems(tmp_path)
    assert sum("run scripts/lock.sh" in p for p in problems) == 2, problems
    assert sum("does not satisfy the declared transformers>=99" in p for p in problems) == 2, problems


@pytest.mark.parametrize("name", list(LOCKS))
def test_every_pin_is_one_this_platform_installs(name):
    """Each package has exactly one pin whose marker holds here (so pip is never left to choose)."""
    _, pins = parse_lock((ROOT / "locks" / name).read_text())
    for key, entries in pins.items():
        here = [v for v, marker, _ in entries if marker is None or marker.evaluate()]
        assert len(here) <= 1, f"locks/{name}: {key} pinned {len(here)} times for this platform: {here}"


def test_installers_use_the_locks():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--requirement locks/setup.txt" in setup and "--no-deps" in setup
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY locks/image.txt " in dockerfile
    assert "!locks/image.txt" in (ROOT / ".dockerignore").read_text().split(), "the build context must hold the lock"
    base = re.search(r"ARG BASE_IMAGE=pytorch/pytorch:(\d+\.\d+\.\d+)-", dockerfile).group(1)
    assert f"torch=={base}\n" in (ROOT / "locks" / "torch-pair.txt").read_text(), \
        "the Dockerfile's base image carries another torch than locks/torch-pair.txt"
