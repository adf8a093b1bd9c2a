"""The package's shape: one top-level import name, and imports that point down.

The repository keeps DESIGN.md's layout (``pipeline/`` and ``components/`` at the top);
installed, they live under ``latent_verbalizer`` so that a user's own ``pipeline.py`` or
``components/`` folder (the kubeflow/pipelines-components convention) cannot shadow them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"pipeline": "latent_verbalizer.pipeline", "components": "latent_verbalizer.components"}


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, and the build's log (setuptools' own output, pip's verbose mode)."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools builds in the source tree's build/, whose leftovers would
    # otherwise travel into the wheel (and parallel runs would share it).
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "node_modules",
                                                                  "__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w",
                            str(out), str(source)], cwd=out, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (whl,) = out.glob("latent_verbalizer-*.whl")
    return whl, build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel(wheel_build) -> Path:
    return wheel_build[0]


def test_build_prints_no_warnings(wheel_build):
    """setuptools warns about folders Python imports as packages but ``packages`` leaves out
    (data folders included), deprecated settings and the like: none of them may appear."""
    warnings = [line.strip() for line in wheel_build[1].splitlines() if re.search(r"\w+Warning\b", line)]
    assert not warnings, "the package build warns:\n" + "\n".join(warnings)


def test_every_folder_of_the_package_is_declared():
    """Each folder under pipeline/ and components/ (tests aside) is in pyproject.toml's ``packages``:
    a sub-package left out would be missing from the wheel while every test of the checkout passes."""
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = []
    for top, name in PACKAGE_DIRS.items():
        for folder in [REPO / top, *(REPO / top).rglob("*")]:
            rel = folder.relative_to(REPO / top)
            if (not folder.is_dir() or not folder.name.isidentifier() or "__pycache__" in rel.parts
                    or "tests" in rel.parts):
                continue
            package = ".".join([name, *rel.parts])
            if package not in declared:
                missing.append(package)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_wheel_installs_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"latent_verbalizer"}, f"the wheel installs top-level names {sorted(tops)}"
    # Package data travels: the tiny-random-coca config and the study's label set.
    assert "latent_verbalizer/components/common/model_configs/coca-tiny-random.json" in names
    for tiny in ("tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava"):  # the offline Hugging Face families
        folder = f"latent_verbalizer/components/common/model_configs/{tiny}/"
        assert {folder + "config.json", folder + "tokenizer.json", folder + "tokenizer_config.json"} <= set(names), tiny
    assert "latent_verbalizer/components/common/model_configs/tiny-random-llava/chat_template.jinja" in names
    assert "latent_verbalizer/components/common/model_families/llava.py" in names
    assert "latent_verbalizer/components/categorize/data/labels.yaml" in names
    # the report page's scripts and styles, inlined at build time from the assets sub-package
    assets = ("run_browser.js", "compare_browser.js", "browser_common.js", "page.css")
    assert {f"latent_verbalizer/components/report/assets/{name}" for name in assets} <= set(names)
    assert not [n for n in names if "/tests/" in n], "tests are not installed"


def test_installed_wheel_runs_beside_a_users_pipeline_and_components(wheel, tmp_path):
    """A clean venv (dependencies reused from ours, not our source tree), run from a folder
    holding its own ``pipeline.py`` and ``components/``: neither shadows the package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # A plain path entry: our site-packages' own .pth files (the editable install of this
    # checkout) are not processed from it, so only the wheel can provide latent_verbalizer.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    user = tmp_path / "user-project"
    (user / "components").mkdir(parents=True)
    (user / "pipeline.py").write_text("raise SystemExit('the user pipeline.py was imported')\n")
    (user / "components" / "__init__.py").write_text("raise SystemExit('the user components/ was imported')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    version = subprocess.run([str(venv / "bin" / "lverb"), "--version"], cwd=user, env=env, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "lverb 0.1.0"
    probe = ("import latent_verbalizer.pipeline.pipeline as p, latent_verbalizer.components.extract.extract as e; "
             "print(p.__file__); print(e.__file__)")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=user, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(site)), f"{line} is not the installed wheel's"
    worker = subprocess.run([str(venv / "bin" / "python"), "-m", "latent_verbalizer", "--version"], cwd=user, env=env,
                            capture_output=True, text=True)
    assert worker.stdout.strip() == "lverb 0.1.0", worker.stderr


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module a file imports, as an absolute dotted name (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _package_modules(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO)
        if "tests" in rel.parts:
            continue
        package = ".".join(["latent_verbalizer"] + list(rel.parts[:-1]))
        yield rel, package, path


def test_components_never_import_the_pipeline():
    upward = [f"{rel}:{line} imports {name}"
              for rel, package, path in _package_modules("components")
              for line, name in _imported_modules(path, package)
              if name == "latent_verbalizer.pipeline" or name.startswith("latent_verbalizer.pipeline.")
              or name.split(".")[0] == "pipeline"]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_components_never_import_each_other():
    """Components meet only through common/ and the data contracts."""
    crossing = []
    for rel, package, path in _package_modules("components"):
        own = rel.parts[1] if len(rel.parts) > 2 else None
        for line, name in _imported_modules(path, package):
            parts = name.split(".")
            if parts[:2] == ["latent_verbalizer", "components"] and len(parts) > 2:
                if parts[2] not in ("common", own) and own is not None:
                    crossing.append(f"{rel}:{line} imports {name}")
    assert not crossing, "components importing each other:\n" + "\n".join(crossing)


def test_no_generic_top_level_imports():
    """Inside the package, nothing imports the bare names ``pipeline`` or ``components``."""
    bare = [f"{rel}:{line} imports {name}"
            for folder in PACKAGE_DIRS for rel, package, path in _package_modules(folder)
            for line, name in _imported_modules(path, package) if name.split(".")[0] in PACKAGE_DIRS]
    assert not bare, "\n".join(bare)
