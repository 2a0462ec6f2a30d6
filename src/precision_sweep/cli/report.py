"""The one user-error reporter of every command: one paragraph on stderr, then exit.

Library code raises :class:`~precision_sweep.errors.UserInputError` (what is wrong, where, how
to fix it); the entry points catch it and call :func:`report_user_error`.
"""

from __future__ import annotations

import sys
import textwrap
from typing import NoReturn

EXIT_USER_ERROR = 2


def fail(program: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``program: message`` as one wrapped paragraph on stderr and exit with ``code``."""
    # Lines break between words only: a path or URI stays whole, so it can be copied (a break at
    # a hyphen inside /tmp/pytest-of-root/... split a path in two).
    paragraph = textwrap.fill(" ".join(str(message).split()), width=100, break_on_hyphens=False,
                              break_long_words=False)
    print(f"{program}: {paragraph}", file=sys.stderr, flush=True)
    sys.exit(code)


def report_user_error(program: str, exc: BaseException) -> NoReturn:
    """Report a user error (``precision-sweep: error: ...``) and exit with code 2."""
    fail(program, f"error: {exc}")
