"""pilotboat.core."""
