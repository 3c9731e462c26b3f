"""Partition keys: one per chap configured model, its id as a string ("3"), listed in number order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def key_order(key: str) -> tuple[int, str]:
    """Sort key: numeric keys by value ("3" before "10"), any other key after them, by text."""
    return (int(key), key) if key.isdigit() else (1 << 62, key)


@dataclass(frozen=True)
class PartitionDiff:
    add: list[str]
    remove: list[str]
    keep: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.add or self.remove)


def diff_partitions(known: Iterable[str], wanted: Iterable[str]) -> PartitionDiff:
    """Partition keys to add and remove so that ``known`` becomes ``wanted``."""
    known_set, wanted_set = set(known), set(wanted)
    return PartitionDiff(
        add=sorted(wanted_set - known_set, key=key_order),
        remove=sorted(known_set - wanted_set, key=key_order),
        keep=sorted(known_set & wanted_set, key=key_order),
    )
