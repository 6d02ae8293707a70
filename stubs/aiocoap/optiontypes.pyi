from typing import NamedTuple

class BlockOption:
    class BlockwiseTuple(NamedTuple):
        block_number: int
        more: bool
        size_exponent: int
        @property
        def size(self) -> int: ...
        @property
        def start(self) -> int: ...
