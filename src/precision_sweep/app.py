"""``precision-sweep``: the Hydra app. One run is one job (:func:`precision_sweep.job.run_job`).

``precision-sweep -m precision=fp32,fp16,int8 target=ios15,ios16,ios17,ios18`` runs a grid;
``precision-sweep -cd sweeps -cn default`` runs a ready grid from ``sweeps/``.
"""

from __future__ import annotations

import os
import sys
import textwrap

# Keep TensorFlow's C++ start-up chatter out of the terminal unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# coremltools draws a progress bar per pass pipeline; ours (runtime.progress) passes
# ``disable`` explicitly and so is not affected by this default.
os.environ.setdefault("TQDM_DISABLE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from precision_sweep import config as _config  # noqa: E402,F401  (registers the schemas)
from precision_sweep.errors import UserInputError  # noqa: E402

EXIT_USER_ERROR = 2


def report_user_error(exc: UserInputError) -> None:
    """Print a user error as one paragraph and exit with code 2."""
    paragraph = textwrap.fill(" ".join(str(exc).split()), width=100)
    print(f"precision-sweep: error: {paragraph}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


@hydra.main(version_base="1.3", config_path=None, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from precision_sweep.job import run_job

    run_job(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
