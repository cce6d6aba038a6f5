"""The one error type alle-ops reports as a sentence instead of a traceback."""


class OpsError(Exception):
    pass
