"""``python -m connector.testing.emulator``: the emulator's command line."""

from connector.testing.emulator.cli import main

raise SystemExit(main())
