from enum import IntEnum

class Code(IntEnum):
    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    CONTENT = 69
    CHANGED = 68
    BAD_REQUEST = 128
    BAD_OPTION = 130
    REQUEST_ENTITY_INCOMPLETE = 136
    PRECONDITION_FAILED = 140
    NOT_ACCEPTABLE = 134
    REQUEST_ENTITY_TOO_LARGE = 141
    UNSUPPORTED_CONTENT_FORMAT = 143
    INTERNAL_SERVER_ERROR = 160
    PROXYING_NOT_SUPPORTED = 165
    def is_request(self) -> bool: ...
    def is_response(self) -> bool: ...
    def is_successful(self) -> bool: ...
    @property
    def dotted(self) -> str: ...
    @property
    def name_printable(self) -> str: ...

EMPTY: Code
GET: Code
POST: Code
PUT: Code
DELETE: Code
CONTENT: Code
CHANGED: Code
INTERNAL_SERVER_ERROR: Code
