"""Errors the stack raises; each message says what to do."""


class StackError(RuntimeError):
    """A server of the local stack could not be managed."""


class MissingPackageError(StackError):
    pass


class PortTakenError(StackError):
    pass


class StartFailedError(StackError):
    pass
