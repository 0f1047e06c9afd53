"""`python -m connector`: the same command line as `lsq-sync`."""

import sys

from connector.cli import main

sys.exit(main())
