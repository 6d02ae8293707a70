"""Cipher contexts are built on first use and only so many stay warm process-wide: idle
associations hold their keys, not 480 bytes of OpenSSL state each (issue 9); an evicted
context is rebuilt transparently and protects exactly as before."""

from __future__ import annotations

import gc
import os
import weakref
from collections import deque

import pytest

from iotdtls.crypto import aead
from iotdtls.crypto.aead import BadTag, Ccm8Protector

SEAL_ARGS = (1, 7, 23, 0xFEFD)


def protector() -> Ccm8Protector:
    return Ccm8Protector(os.urandom(16), os.urandom(4))


def warm(p: Ccm8Protector) -> bool:
    return p._aead is not None


def test_a_context_is_built_on_first_use_only() -> None:
    p = protector()
    assert not warm(p)
    p.seal(*SEAL_ARGS, b"x")
    assert warm(p)


def test_only_the_newest_contexts_stay_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aead, "WARM_CIPHERS", 3)
    monkeypatch.setattr(aead, "_warm", deque())
    ps = [protector() for _ in range(10)]
    for p in ps:
        p.seal(*SEAL_ARGS, b"x")
    assert [warm(p) for p in ps] == [False] * 7 + [True] * 3
    assert len(aead._warm) == 3


def test_an_evicted_context_is_rebuilt_and_protects_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aead, "WARM_CIPHERS", 1)
    monkeypatch.setattr(aead, "_warm", deque())
    key, iv = os.urandom(16), os.urandom(4)
    sender, receiver = Ccm8Protector(key, iv), Ccm8Protector(key, iv)
    before = sender.seal(*SEAL_ARGS, b"reading")
    assert receiver.open(*SEAL_ARGS, before) == b"reading"  # evicts the sender's context
    assert not warm(sender)
    assert sender.seal(*SEAL_ARGS, b"reading") == before  # same key, nonce and AAD
    with pytest.raises(BadTag):
        receiver.open(*SEAL_ARGS, before[:-1] + bytes([before[-1] ^ 1]))


@pytest.mark.secret_guard_off  # the guard itself keeps every protector it saw
def test_the_warm_list_keeps_no_protector_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aead, "_warm", deque())
    p = protector()
    p.seal(*SEAL_ARGS, b"x")
    gone = weakref.ref(p)
    del p
    gc.collect()
    assert gone() is None
    for _ in range(aead.WARM_CIPHERS + 1):  # its dead entry ages out like any other
        protector().seal(*SEAL_ARGS, b"x")
    assert len(aead._warm) == aead.WARM_CIPHERS
