"""``python -m plmexit.cli``: the ``plmexit`` command."""

import sys

from plmexit.cli import main

sys.exit(main())
