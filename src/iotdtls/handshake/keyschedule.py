"""The key schedule of one handshake (RFC 5246 §6.3, §7.4.9, §8.1; RFC 7627 §4).

It holds the transcript, both randoms and the master secret, and derives from them the record
keys of the next epoch (through the suite's description) and the Finished verify_data. Nothing
here depends on the key exchange: PSK and ECDHE both hand in a premaster secret. A resumed
session (RFC 5246 §7.3) hands in its master secret instead (`resume`), and the master secret of
a full handshake becomes the session state for later resumptions (`master_secret`).
"""

from __future__ import annotations

import logging

from iotdtls.config import KeyLogCallback, KeyLogFailed
from iotdtls.crypto import (
    constant_time_equal,
    derive_key_block,
    extended_master_secret,
    finished_verify_data,
    keylog_line,
    master_secret,
)
from iotdtls.crypto.prf import HmacSha256
from iotdtls.crypto.suites import EpochKeys, SuiteInfo
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.transcript import Transcript

__all__ = ["KeySchedule"]

logger = logging.getLogger("iotdtls")


#: The transcript of every finished handshake: nothing is hashed once the Finished are checked.
SPENT_TRANSCRIPT = Transcript()


class KeySchedule:
    """Transcript, randoms and master secret of one handshake. The repr shows no secret."""

    __slots__ = (
        "_keylog",
        "_master",
        "_master_mac",
        "client_random",
        "extended_master_secret",
        "server_random",
        "transcript",
    )

    def __init__(self, keylog: KeyLogCallback | None) -> None:
        self.transcript = Transcript()
        self.client_random = b""
        self.server_random = b""
        #: Negotiated RFC 7627 extended master secret (RES-3).
        self.extended_master_secret = False
        self._master = b""
        #: The master secret keyed for HMAC-SHA256 once, for the PRFs of this handshake.
        self._master_mac: HmacSha256 | None = None
        self._keylog = keylog

    def release(self) -> None:
        """The handshake is over: its transcript and the server random are no longer needed
        (the master secret stays, for resumption and the key log)."""
        self.transcript = SPENT_TRANSCRIPT
        self.server_random = b""
        self._master_mac = None

    def __repr__(self) -> str:
        master = "set" if self._master else "unset"
        return f"<KeySchedule ems={self.extended_master_secret} master={master}>"

    def derive(self, premaster: bytes, suite: SuiteInfo, is_client: bool) -> EpochKeys:
        """Master secret (RFC 7627 §4 when negotiated, else RFC 5246 §8.1) and the next epoch's
        record protectors for our side.

        Called right after the ClientKeyExchange entered the transcript, so the session hash
        covers it (RFC 7627 §3)."""
        if self.extended_master_secret:
            master = extended_master_secret(premaster, self.transcript.digest())
        else:
            master = master_secret(premaster, self.client_random, self.server_random)
        return self._epoch_keys(master, suite, is_client)

    def resume(self, master: bytes, suite: SuiteInfo, is_client: bool) -> EpochKeys:
        """The abbreviated handshake (RFC 5246 §7.3, §7.4.1.2): the session's master secret
        with this handshake's fresh randoms gives new record keys (RFC 5246 §6.3)."""
        return self._epoch_keys(master, suite, is_client)

    def _epoch_keys(self, master: bytes, suite: SuiteInfo, is_client: bool) -> EpochKeys:
        self._master = master
        self._master_mac = HmacSha256(master)
        self._write_keylog()
        block = derive_key_block(self._master_mac, self.client_random, self.server_random)
        return suite.epoch_keys(block, is_client)

    @property
    def master_secret(self) -> bytes:
        """The master secret, for the session state of a resumable session only (a secret:
        never log it)."""
        return self._master

    def verify_data(self, from_client: bool) -> bytes:
        """Finished verify_data over the transcript so far (RFC 5246 §7.4.9)."""
        keyed = self._master if self._master_mac is None else self._master_mac
        return finished_verify_data(keyed, from_client, self.transcript.digest())

    def check_verify_data(self, received: bytes, from_client: bool) -> None:
        """The peer's Finished, compared in constant time (SEC-2); decrypt_error otherwise."""
        if not constant_time_equal(self.verify_data(from_client), received):
            raise ProtocolError("peer Finished does not verify", AlertDescription.decrypt_error)

    def _write_keylog(self) -> None:
        if self._keylog is None:
            return
        try:
            self._keylog(keylog_line(self.client_random, self._master))
        except KeyLogFailed as exc:  # our file's: its text names the file and why, no key
            if exc.shown is not None:  # None: counted, to be summed up later (FileKeyLog)
                logger.warning("%s", exc.shown)
        except Exception as exc:  # the key log is a debugging aid: never fatal
            logger.warning("key log callback failed: %s", type(exc).__name__)
