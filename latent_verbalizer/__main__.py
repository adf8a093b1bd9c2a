"""``python -m latent_verbalizer`` is ``lverb``."""

import sys

from .pipeline.cli import main

sys.exit(main())
