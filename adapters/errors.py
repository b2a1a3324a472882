"""The adapters' error family: every message says what, where (file, row, column) and why."""


class AdapterError(Exception):
    """Root of every error raised by the adapters package."""


class MappingError(AdapterError):
    """A mapping file is invalid; the message names the file and the key."""


class SourceError(AdapterError):
    """A source cannot be read (encoding, format, connection); names the source and row."""
