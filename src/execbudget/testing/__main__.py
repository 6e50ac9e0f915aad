"""``python -m execbudget.testing``: the fake provider in the foreground."""

from __future__ import annotations

import sys

from execbudget.testing._cli import main

if __name__ == "__main__":
    sys.exit(main())
