"""Test doubles that ship with lsq-sync, for your own tests: the LeadSquared emulator."""
