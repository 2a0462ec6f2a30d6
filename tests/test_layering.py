"""The declared layering (pyproject's import-linter contracts) holds for the code as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sweep_testing import REPO


def test_import_contracts_are_kept():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout
