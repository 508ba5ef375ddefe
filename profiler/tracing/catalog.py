"""One string table and one scope-stack trie for a whole run.

Each profiler window is parsed on its own, with its own string ids and stack
ids; the catalog maps them to the run's ids, and hands out the rows that are
new since the last window so the store can append them.
"""
from __future__ import annotations

import numpy as np

from ..store import STACK_DTYPE


class Catalog:
    def __init__(self) -> None:
        self.strings: list[str] = [""]
        self._string_ids: dict[str, int] = {"": 0}
        self._stack_ids: dict[tuple[int, int], int] = {(0, 0): 0}
        self._stacks: list[tuple[int, int]] = [(0, 0)]
        self._strings_taken = 1
        self._stacks_taken = 1

    def string(self, s: str) -> int:
        i = self._string_ids.get(s)
        if i is None:
            i = self._string_ids[s] = len(self.strings)
            self.strings.append(s)
        return i

    def strings_map(self, local: list[str], used=None) -> np.ndarray:
        """Run ids of a window's string table, as an array indexed by local id. Only
        the local ids in ``used`` (default: all) are added to the run's table; the
        others map to 0."""
        out = np.zeros(len(local), dtype=np.uint32)
        for i in range(len(local)) if used is None else used:
            out[i] = self.string(local[i])
        return out

    def stacks_map(self, local_stacks: np.ndarray, names_map: np.ndarray) -> np.ndarray:
        """Run ids of a window's stack trie (rows: parent, scope; row 0 the root;
        parents precede children), as an array indexed by local id."""
        out = np.zeros(len(local_stacks), dtype=np.uint32)
        for i in range(1, len(local_stacks)):
            parent, scope = local_stacks[i]
            key = (int(out[parent]), int(names_map[scope]))
            j = self._stack_ids.get(key)
            if j is None:
                j = self._stack_ids[key] = len(self._stacks)
                self._stacks.append(key)
            out[i] = j
        return out

    def take_new(self) -> tuple[list[str], np.ndarray]:
        """Strings and stack rows added since the last call."""
        strings = self.strings[self._strings_taken :]
        stacks = np.array(self._stacks[self._stacks_taken :], dtype=STACK_DTYPE)
        self._strings_taken, self._stacks_taken = len(self.strings), len(self._stacks)
        return strings, stacks
