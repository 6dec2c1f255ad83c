"""pilotboat.cli."""
