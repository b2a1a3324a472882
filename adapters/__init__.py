"""Reading department data and mapping it onto the catalogue (see docs/decisions/0001)."""

from adapters.errors import AdapterError, MappingError, SourceError

__all__ = ["AdapterError", "MappingError", "SourceError"]
