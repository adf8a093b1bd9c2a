"""The type checker over the package (mypy, configured in pyproject.toml's ``[tool.mypy]``).

It reads the checkout as an editor does: ``latent_verbalizer.components`` and
``latent_verbalizer.pipeline`` resolve through the symlinks in ``latent_verbalizer/`` (the
package-dir mapping), with no install needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("mypy", reason="mypy comes with the test extra (make setup)")


def mypy(*args: str) -> subprocess.CompletedProcess:
    """mypy with the project's config; the cache (a cold run takes a minute, a warm one seconds) is
    shared by this module's tests, which ``make test`` keeps on one worker (--dist loadscope)."""
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(REPO / "build" / "mypy-cache"), *args],
                          cwd=REPO, capture_output=True, text=True)


def test_package_type_checks():
    result = mypy()
    assert result.returncode == 0, f"mypy found errors (run `python -m mypy` in the repository):\n{result.stdout}"
    assert "Success" in result.stdout


def test_checker_follows_the_package_dir_mapping_to_a_wrong_type(tmp_path):
    """A call with a wrong argument type into ``components/``, imported by its installed name:
    the checker must find the module through the mapping (else it would not know the signature)."""
    caller = tmp_path / "wrong_type.py"
    caller.write_text("from latent_verbalizer.components.common.storage import parse_s3\n\nparse_s3(42)\n")
    result = mypy(str(caller))
    assert result.returncode == 1, result.stdout
    assert 'Argument 1 to "parse_s3" has incompatible type "int"; expected "str"  [arg-type]' in result.stdout, \
        result.stdout
