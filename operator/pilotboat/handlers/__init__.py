"""pilotboat.handlers."""
