"""Generate a synthetic CAMELYON-17-like cohort (the ``wsi-synth-cohort`` command).

.venv/bin/python tools/synth_cohort.py --preset demo --workers 2 --out_dir outputs/synth/demo
"""

from __future__ import annotations

import sys

from wsi_ncmi.cli.synth import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
