"""The key cache's storage: two bounded LRU maps, one for known keys and one for unknown ones.

Unknown keys (the negative cache) have a map of their own, so a flood of random keys drops
other random keys, never a real client's cached record. The interface is a dict's (`get`,
item assignment, `pop`, `clear`, `len`) so the cache's code reads as before.
"""

from __future__ import annotations

from collections import OrderedDict

from tollway.core.types import KeyRecord

Entry = tuple[KeyRecord | None, float]  # (record, or None for an unknown key; expiry)


class KeyLRU:
    __slots__ = ("_known", "_known_size", "_unknown", "_unknown_size")

    def __init__(self, known_size: int, unknown_size: int) -> None:
        self._known: OrderedDict[str, Entry] = OrderedDict()
        self._unknown: OrderedDict[str, Entry] = OrderedDict()
        self._known_size = known_size
        self._unknown_size = unknown_size

    def get(self, digest: str) -> Entry | None:
        entry = self._known.get(digest)
        if entry is not None:
            self._known.move_to_end(digest)
            return entry
        return self._unknown.get(digest)  # not refreshed: an unknown key earns no stay

    def peek(self, digest: str) -> Entry | None:
        """The entry, leaving its place in the LRU order alone."""
        entry = self._known.get(digest)
        return entry if entry is not None else self._unknown.get(digest)

    def __setitem__(self, digest: str, entry: Entry) -> None:
        if entry[0] is None:
            self._known.pop(digest, None)
            self._put(self._unknown, self._unknown_size, digest, entry)
        else:
            self._unknown.pop(digest, None)
            self._put(self._known, self._known_size, digest, entry)

    @staticmethod
    def _put(entries: OrderedDict[str, Entry], size: int, digest: str, entry: Entry) -> None:
        entries[digest] = entry
        entries.move_to_end(digest)
        while len(entries) > size:
            entries.popitem(last=False)

    def pop(self, digest: str, default: Entry | None = None) -> Entry | None:
        known = self._known.pop(digest, None)
        unknown = self._unknown.pop(digest, None)
        return known or unknown or default

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    def __contains__(self, digest: object) -> bool:
        return digest in self._known or digest in self._unknown
