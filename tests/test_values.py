"""`iotdtls._values.statically_frozen`: the core's messages and key material are frozen to the
type checker and behave as frozen dataclasses (equality, hash, `replace`, redacted reprs), with
a plain `__init__` at run time."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from iotdtls.crypto import Ccm8Protector, KeyBlock
from iotdtls.crypto.suites import EpochKeys
from iotdtls.messages.alert import Alert
from iotdtls.messages.ccs import ChangeCipherSpec
from iotdtls.messages.handshake import ClientHello, Finished, HelloVerifyRequest, ServerHello
from iotdtls.messages.keyexchange import ClientKeyExchangePsk

SRC = Path(__file__).resolve().parents[1] / "src"
STATICALLY_FROZEN = (
    ClientHello,
    HelloVerifyRequest,
    ServerHello,
    Finished,
    ClientKeyExchangePsk,
    ChangeCipherSpec,
    Alert,
    KeyBlock,
    EpochKeys,
)


def key_block(key: bytes = bytes(16)) -> KeyBlock:
    return KeyBlock(key, bytes(range(16)), bytes(4), b"\x01\x02\x03\x04")


@pytest.mark.parametrize("cls", STATICALLY_FROZEN, ids=lambda cls: cls.__name__)
def test_the_init_stores_fields_plainly(cls: type) -> None:
    """No `__setattr__` of the class refuses changes: a frozen dataclass's would make its
    generated `__init__` store every field through `object.__setattr__` (about 1,300
    instructions a field on CPython 3.11, 3 % of a PSK handshake over its messages and keys)."""
    assert "__setattr__" not in vars(cls)
    assert "__slots__" in vars(cls)


def test_values_compare_hash_and_replace_by_fields_as_frozen_dataclasses() -> None:
    finished = Finished(b"v" * 12)
    assert finished == Finished(b"v" * 12) and finished != Finished(b"w" * 12)
    assert hash(finished) == hash(Finished(b"v" * 12))
    assert {finished: 1}[Finished(b"v" * 12)] == 1
    assert dataclasses.replace(finished, verify_data=b"w" * 12) == Finished(b"w" * 12)
    assert hash(key_block()) == hash(key_block()) and key_block() != key_block(bytes(range(16)))
    assert not hasattr(finished, "__dict__")


def test_key_material_keeps_its_redacted_repr() -> None:
    protector = Ccm8Protector(bytes(16), bytes(4))
    assert repr(EpochKeys(protector, protector)) == "EpochKeys(<redacted>)"
    assert "redacted" in repr(key_block()) and "00" not in repr(key_block())


def test_mypy_refuses_an_assignment_to_a_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The immutability the run time no longer enforces is checked statically (`mypy --strict`
    of the library and its users)."""
    snippet = tmp_path / "assigns.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from iotdtls.crypto import KeyBlock
            from iotdtls.messages.handshake import Finished

            def change(finished: Finished, block: KeyBlock) -> None:
                finished.verify_data = b""
                block.client_write_key = b""
            """
        )
    )
    monkeypatch.setenv("MYPYPATH", str(SRC))  # this tree, not an installed copy
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert status == 1
    assert 'Property "verify_data" defined in "Finished" is read-only' in out
    assert 'Property "client_write_key" defined in "KeyBlock" is read-only' in out
