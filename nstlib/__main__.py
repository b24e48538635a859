"""`python -m nstlib`: the `nstlib` command (`nstlib.apps.cli.main`), its exit code passed through."""

import sys

from nstlib.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
