from enum import IntEnum

class Type(IntEnum):
    CON = 0
    NON = 1
    ACK = 2
    RST = 3

CON: Type
NON: Type
ACK: Type
RST: Type
