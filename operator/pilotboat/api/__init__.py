"""pilotboat.api."""
