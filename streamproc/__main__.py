"""``python -m streamproc`` is the ``streamproc`` command."""

import sys

from .cli import main

sys.exit(main())
