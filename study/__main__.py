"""``python -m study ...`` (what torchrun runs on every rank: ``torchrun -m study run ...``)."""

import sys

from .cli import main

sys.exit(main())
