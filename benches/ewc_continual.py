"""The continual-learning benchmark (design §11.2), same as ``sona eval continual``.

Usage: ``python benches/ewc_continual.py [--benchmark permuted|split|both] [--seeds 5]
[--methods none ewc ...] [--json out.json] [--plot out.png]``
"""

from __future__ import annotations

import argparse
import sys

from sona.evals import continual

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    continual.add_arguments(parser)
    sys.exit(continual.main(parser.parse_args()))
