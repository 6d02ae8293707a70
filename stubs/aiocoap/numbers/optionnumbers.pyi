from enum import IntEnum

class OptionNumber(IntEnum):
    IF_MATCH = 1
    URI_HOST = 3
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    OSCORE = 9
    URI_PATH = 11
    URI_PATH_ABBREV = 13
    URI_QUERY = 15
    ACCEPT = 17
    EDHOC = 21
    BLOCK2 = 23
    BLOCK1 = 27
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60
    def is_critical(self) -> bool: ...
