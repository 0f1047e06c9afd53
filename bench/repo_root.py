"""Puts the checkout's root on sys.path, so that the bench scripts build on the test helpers.

The scripts run as `python bench/run.py` (and breakdown.py, pacing.py), which puts only bench/
on sys.path; `tests` is not an installed package. Each script imports this module before any
`tests.*` import.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
