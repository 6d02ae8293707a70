COAP_PORT: int
COAPS_PORT: int
MAX_REGULAR_BLOCK_SIZE_EXP: int
SHUTDOWN_TIMEOUT: float

class TransportTuning:
    ACK_TIMEOUT: float
    ACK_RANDOM_FACTOR: float
    MAX_RETRANSMIT: int
    NSTART: int
    DEFAULT_BLOCK_SIZE_EXP: int
    @property
    def MAX_TRANSMIT_WAIT(self) -> float: ...
