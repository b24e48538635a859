"""`python -m nstlib`: the `nstlib` command (`nstlib.cli.main`), its exit code passed through."""

import sys

from nstlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
