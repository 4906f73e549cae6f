"""pushbench."""
