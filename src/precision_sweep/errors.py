"""Errors a user can cause. They are reported at the edge as one paragraph, exit code 2."""


class UserInputError(Exception):
    """Bad input from the user (paths, files, shapes, labels, config values).

    The message says what is wrong, where, and how to fix it.
    """


class SkipJob(Exception):
    """The job's combination cannot deploy (e.g. precision needs a newer target): skip it."""
