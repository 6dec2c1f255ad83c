"""pilotboat.adapters."""
