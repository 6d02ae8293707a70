"""`iotdtls._values.statically_frozen`: the core's messages and key material are frozen to the
type checker and behave as frozen dataclasses (equality, hash, `replace`, redacted reprs), with
a plain `__init__` at run time. `plainly_built`: the frozen values a handshake hands to users
(`HandshakeComplete`, `SessionState`) made from a plain twin, frozen at run time all the same."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

from iotdtls._values import plainly_built
from iotdtls.config import Mode
from iotdtls.connection import ConnectionState
from iotdtls.crypto import Ccm8Protector, KeyBlock
from iotdtls.crypto.suites import EpochKeys
from iotdtls.errors import ConfigError
from iotdtls.events import HandshakeComplete
from iotdtls.identity import PskIdentity
from iotdtls.messages.alert import Alert
from iotdtls.messages.ccs import ChangeCipherSpec
from iotdtls.messages.handshake import ClientHello, Finished, HelloVerifyRequest, ServerHello
from iotdtls.messages.keyexchange import ClientKeyExchangePsk
from iotdtls.sessions import SessionState
from tests.memory_link import events_of, make_link

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


def test_a_handshake_hands_out_frozen_values_that_are_what_their_classes_make() -> None:
    """The `HandshakeComplete` events and sessions of a handshake are made by `plainly_built`:
    instances of their classes, equal and hashed as the classes' own constructors make them,
    refusing assignment at run time (`FrozenInstanceError`, which users rely on)."""
    link = make_link()
    link.handshake()
    assert link.client.state is ConnectionState.ESTABLISHED
    (complete,) = events_of(link, "client", HandshakeComplete)
    assert type(complete) is HandshakeComplete
    fields = {f.name: getattr(complete, f.name) for f in dataclasses.fields(complete)}
    assert complete == HandshakeComplete(**fields)
    assert hash(complete) == hash(HandshakeComplete(**fields))
    assert refuses_assignment(complete, "resumed")
    session = link.client.session
    assert type(session) is SessionState
    assert refuses_assignment(session, "server_name")


def refuses_assignment(value: object, name: str) -> bool:
    """Assigning to field `name` of `value` raises `FrozenInstanceError`."""
    try:
        setattr(value, name, getattr(value, name))
    except dataclasses.FrozenInstanceError:
        return True
    return False


def session_fields(**changes: Any) -> dict[str, Any]:
    return {
        "session_id": b"s" * 32,
        "cipher_suite": 0xC0A8,
        "mode": Mode.PSK,
        "master_secret": bytes(48),
        "peer": PskIdentity(b"id"),
        **changes,
    }


def test_plainly_built_values_are_instances_of_their_frozen_class() -> None:
    make = plainly_built(SessionState)
    made = make(**session_fields())
    assert type(made) is SessionState and made == SessionState(**session_fields())
    assert repr(made) == repr(SessionState(**session_fields()))
    assert not hasattr(made, "__dict__")
    assert refuses_assignment(made, "cipher_suite")
    for copied in (copy.copy(made), copy.deepcopy(made), pickle.loads(pickle.dumps(made))):
        assert copied == made and type(copied) is SessionState
    assert dataclasses.replace(made, server_name="host") == SessionState(
        **session_fields(server_name="host")
    )


def test_plainly_built_values_pass_their_class_checks() -> None:
    """`__post_init__` runs on the twin: a plainly built value is checked as one made by its
    class."""
    with pytest.raises(ConfigError, match="master secret is 48 bytes"):
        plainly_built(SessionState)(**session_fields(master_secret=bytes(47)))


def test_a_plainly_built_value_whose_check_fails_shows_no_secret_in_a_traceback() -> None:
    """Where `__post_init__` refuses, the value is still the twin: a traceback that shows its
    locals (pytest --showlocals, error trackers) shows it with its class's redacting repr, as
    for a value its class makes (the constructor's own arguments are its caller's; probe CJ)."""
    secret = bytes.fromhex("5ec2e7" * 16)
    with pytest.raises(ConfigError) as refused:
        plainly_built(SessionState)(**session_fields(master_secret=secret, session_id=b""))
    shown = "".join(
        traceback.TracebackException.from_exception(refused.value, capture_locals=True).format()
    )
    selves = [line for line in shown.splitlines() if line.strip().startswith("self =")]
    assert selves and all("<redacted>" in line for line in selves)
    assert not any(repr(secret)[2:20] in line for line in selves)


@dataclasses.dataclass(frozen=True, slots=True)
class Shaped:
    """A frozen value with each kind of field `plainly_built` carries to its twin."""

    first: int
    listed: tuple[int, ...] = dataclasses.field(default_factory=tuple)
    derived: int = dataclasses.field(default=7, init=False)
    _: dataclasses.KW_ONLY
    named: str = "n"


def test_plainly_built_takes_the_same_arguments_as_its_class() -> None:
    """The twin's constructor is its class's: a default factory, a field outside `__init__`
    and keyword-only fields carried over as they are."""
    make = plainly_built(Shaped)
    assert make(1) == Shaped(1) and make(1).listed == () and make(1).derived == 7
    assert make(1, (2,), named="m") == Shaped(1, (2,), named="m")
    with pytest.raises(TypeError):
        make(1, (2,), "m")  # type: ignore[call-arg]  # keyword-only
    with pytest.raises(TypeError):
        make(1, derived=8)  # type: ignore[call-arg]  # not in __init__


def test_plainly_built_refuses_a_class_it_cannot_twin() -> None:
    """A frozen dataclass without slots has a layout its twin does not share: refused when the
    constructor is made, not at the first value."""

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        value: int

    with pytest.raises(TypeError):
        plainly_built(Unslotted)
