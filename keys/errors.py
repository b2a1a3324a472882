"""The keys package's error family.

Crypto failures stay opaque: they never say which byte failed.
"""


class KeysError(Exception):
    """Root of every error raised by the keys package."""


class KeyFileError(KeysError):
    """A key file is missing, too open, of the wrong type or length (the message names it)."""


class PassphraseRequired(KeyFileError):
    """A key file is passphrase-protected and no passphrase was given."""


class PassphraseNotExpected(KeyFileError):
    """A passphrase was given for a key file that is not protected (refused: a possible plant)."""


class VerificationError(KeysError):
    """A signature, proof, sealed message or stored row did not verify."""


class BundleError(KeysError):
    """A trust bundle was refused: wrong root, rollback, expired or malformed."""
