from enum import IntEnum

class OptionNumber(IntEnum):
    OBSERVE = 6
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE1 = 60
