"""``python -m precision_sweep`` runs the same Hydra app as ``precision-sweep``."""

from precision_sweep.app import main

if __name__ == "__main__":
    main()
