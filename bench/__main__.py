"""``python -m bench``: every benchmark in one run; see :mod:`bench.run`."""

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
