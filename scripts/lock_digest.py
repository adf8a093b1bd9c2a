"""The digest of what the lock files are resolved from: pyproject.toml's requirements (with
every extra) and ``locks/torch-pair.txt``. ``scripts/lock.sh`` writes it into each lock's header;
``tests/test_lock.py`` recomputes it, so a lock older than its inputs fails the tests.

    python scripts/lock_digest.py [REPO_ROOT]      # prints the digest
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

HEADER = "# inputs-sha256: "


def inputs(root: Path) -> dict:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pair = [line.strip() for line in (root / "locks" / "torch-pair.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {"requires-python": project.get("requires-python"), "dependencies": project["dependencies"],
            "optional-dependencies": project.get("optional-dependencies", {}), "torch-pair": pair}


def digest(root: Path) -> str:
    return hashlib.sha256(json.dumps(inputs(root), sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    print(digest(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
