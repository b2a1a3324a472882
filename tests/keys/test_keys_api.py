"""The keys package's public surface: the names of decision 0001 exist, `__all__` is exact."""

from __future__ import annotations

import keys

CONTRACT = {
    "KeysError", "KeyFileError", "VerificationError", "BundleError", "keyid", "NodeKeys",
    "create_key_dir", "load_key_dir", "Signer", "verify_signature", "Envelope", "pae",
    "sign_envelope", "verify_envelope", "RECORD_PAYLOAD_TYPE", "SignedRecord", "VerifiedRecord",
    "sign_record", "verify_record", "seal", "open_sealed", "seal_batch", "open_batch",
    "StorageCipher", "BlindIndex", "leaf_hash", "node_hash", "root_from_leaves",
    "inclusion_proof", "verify_inclusion", "consistency_proof", "verify_consistency",
    "CompactRange", "Checkpoint", "sign_checkpoint", "cosign_note", "verify_checkpoint",
    "RosterEntry", "Agreement", "TrustBundle", "sign_bundle", "accept_bundle",
}  # fmt: skip


def test_contract_names_are_exported() -> None:
    assert set(keys.__all__) >= CONTRACT


def test_all_is_exact_and_sorted() -> None:
    public = {n for n in vars(keys) if not n.startswith("_")}
    submodules = {"at_rest", "bundle", "checkpoint", "envelope", "errors", "keydir", "merkle",
                  "passphrase_box", "records", "sealing", "signing"}  # fmt: skip
    assert set(keys.__all__) == public - submodules

    # isort-style order (constants, classes, functions), as ruff's RUF022 keeps it.
    def order(name: str) -> tuple[int, str]:
        kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return kind, name

    assert keys.__all__ == sorted(keys.__all__, key=order)
