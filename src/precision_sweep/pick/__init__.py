"""Stage 7: choose the cheapest configuration whose accuracy stays within a budget."""

from precision_sweep.pick.select import Decision, pick

__all__ = ["Decision", "pick"]
