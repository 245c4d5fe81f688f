"""``python -m mp_magic.cli``: the `mp` command."""

import sys

from . import main

sys.exit(main())
