"""The adaptation benchmark of design §11.1 (same as ``sona eval adapt``).

python benches/lora_adapt.py [--seeds 3] [--feedbacks 2000] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import sys

from sona.evals import adapt


def main() -> int:
    """Parse the ``sona eval adapt`` options and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    adapt.add_arguments(parser)
    return adapt.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
