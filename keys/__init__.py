"""Everything cryptographic in credex (see docs/decisions/0001-package-interfaces.md)."""

from keys.errors import BundleError, KeyFileError, KeysError, VerificationError

__all__ = ["BundleError", "KeyFileError", "KeysError", "VerificationError"]
