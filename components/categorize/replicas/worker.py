"""One replica process of the categorize step (started and supervised by ``processes``):
``python -m latent_verbalizer.components.categorize.replicas.worker SPEC.json [STATS.json]``."""

import json
import sys

from ...common.logs import configure_logging
from .replica import run_replica
from .supervisor import supervised_child


def main() -> None:
    configure_logging()
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    run_replica(spec, sys.argv[2] if len(sys.argv) > 2 else None)


if __name__ == "__main__":
    supervised_child(main)
