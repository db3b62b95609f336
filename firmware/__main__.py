"""``python -m firmware`` runs the ``linerec`` command."""

import sys

from firmware.cli import main

sys.exit(main())
