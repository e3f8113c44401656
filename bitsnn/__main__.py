"""``python -m bitsnn``: the command line (what ``torchrun -m bitsnn train ...`` runs)."""

import sys

from bitsnn.cli import main

sys.exit(main())
