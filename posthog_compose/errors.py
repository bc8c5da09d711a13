"""Errors an operator can fix. They print as one line, never as a traceback."""


class OperatorError(Exception):
    """A mistake in the operator's input or environment: one line saying what and how to fix.

    ``code`` is the process exit code the task ends with.
    """

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message
