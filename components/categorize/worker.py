"""One replica process of the categorize step (started by ``run_categorize``):
``python -m latent_verbalizer.components.categorize.worker SPEC.json [STATS.json]``."""

import json
import logging
import sys

from .categorize import run_worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    run_worker(spec, sys.argv[2] if len(sys.argv) > 2 else None)
