"""Plain types of PDQ hashing shared by the reference path (`perceptual`) and the exact dihedral
path (`dihedral`), so neither module imports the other."""

from __future__ import annotations

from typing import NamedTuple

PDQ_MIN_QUALITY = 50
DIHEDRAL_NAMES = ("original", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flipplus1", "flipminus1")


class PdqDihedral(NamedTuple):
    """The 8 dihedral PDQ hashes (order of DIHEDRAL_NAMES) of one image, and its quality."""

    hexes: list[str]
    quality: int

    @property
    def hashable(self) -> bool:
        """Whether the quality reaches PDQ_MIN_QUALITY."""
        return self.quality >= PDQ_MIN_QUALITY
