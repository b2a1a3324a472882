"""node.durable.publish_new_file: a new file appears whole or not at all, and never replaces one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.durable import publish_new_file


def test_the_file_appears_whole_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "export.jsonl"
    publish_new_file(target, iter([b"one\n", b"two\n"]))
    assert target.read_bytes() == b"one\ntwo\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "export.jsonl"
    target.write_bytes(b"evidence\n")
    with pytest.raises(FileExistsError):
        publish_new_file(target, iter([b"new\n"]))
    assert target.read_bytes() == b"evidence\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"half"
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        publish_new_file(tmp_path / "export.jsonl", chunks())
    assert list(tmp_path.iterdir()) == []


def test_without_hard_links_the_file_is_renamed_in_and_still_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(_src: object, _dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "export.jsonl"
    publish_new_file(target, iter([b"data\n"]))
    assert target.read_bytes() == b"data\n"
    with pytest.raises(FileExistsError):
        publish_new_file(target, iter([b"other\n"]))
    assert target.read_bytes() == b"data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]
