"""precision-sweep's Hydra configs, read by the app through this package (see app.py)."""
