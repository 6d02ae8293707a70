"""The demo site of `iotdtls coap serve` (COAP-1), resource by resource in this process:
`/hello` greets the authenticated identity (or plainly, over plain CoAP), `/counter` counts
intervals and ticks for its observers only while there are some (RFC 7641 §4.2)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiocoap import BAD_REQUEST, CHANGED, CONTENT, GET, PUT, Message
from aiocoap.error import UnallowedMethod
from aiocoap.message import Direction
from aiocoap.numbers.codes import Code

from iotdtls.coap import demo
from iotdtls.identity import CertificateIdentity, PskIdentity
from tests.coap_support import run

TEXT_PLAIN = 0  # RFC 7252 §12.3: text/plain; charset=utf-8
PRECONDITION_FAILED = Code.PRECONDITION_FAILED  # 4.12


def request(remote: Any) -> Message:
    message = Message(code=GET)
    message.remote = remote
    return message


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize(
    ("remote", "greeting"),
    [
        (SimpleNamespace(peer=PskIdentity(b"dev1")), b"Hello, dev1!"),
        (SimpleNamespace(peer=PskIdentity(b"\xff\x01")), b"Hello, psk identity b'\\xff\\x01'!"),
        (SimpleNamespace(peer=PskIdentity(b"a\nb")), b"Hello, psk identity b'a\\nb'!"),
        (SimpleNamespace(peer=CertificateIdentity("dev.example")),
         b"Hello, certificate dev.example!"),
        (SimpleNamespace(), b"Hello!"),  # plain CoAP: no authenticated peer
        (SimpleNamespace(peer=None), b"Hello!"),
    ],
)
def test_hello_greets_the_peer_the_handshake_authenticated(remote: Any, greeting: bytes) -> None:
    async def main() -> None:
        answer = await demo.Hello().render_get(request(remote))
        assert (answer.payload, answer.opt.content_format) == (greeting, TEXT_PLAIN)

    run(main())


def test_the_counter_counts_intervals_in_text(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(demo.time, "monotonic", lambda: now[0])
    assert demo.Counter().interval == 1.0
    counter = demo.Counter(0.5)
    now[0] += 1.74

    async def main() -> None:
        answer = await counter.render_get(request(SimpleNamespace()))
        assert (answer.payload, answer.opt.content_format) == (b"3", TEXT_PLAIN)

    run(main())


def test_the_counter_ticks_only_while_observed() -> None:
    """One ticking task from the first observer on, kept while observers come and go, ended
    (quietly, not as a cancelled task) with the last; a later observer starts a new one."""
    async def main() -> None:
        counter = demo.Counter(0.02)
        ticks: list[int] = []
        counter.updated_state = lambda *args, **kwargs: ticks.append(counter.value)
        assert counter._ticker is None
        counter.update_observation_count(1)
        first = counter._ticker
        assert first is not None
        counter.update_observation_count(2)
        assert counter._ticker is first
        await asyncio.sleep(0.15)
        assert len(ticks) >= 3 and ticks == sorted(ticks), ticks
        counter.update_observation_count(1)
        assert counter._ticker is first and not first.done()
        counter.update_observation_count(0)
        assert counter._ticker is None
        assert await asyncio.wait_for(first, 1.0) is None
        assert not first.cancelled()
        seen = len(ticks)
        await asyncio.sleep(0.06)
        assert len(ticks) == seen  # nobody observes: no ticks
        counter.update_observation_count(1)
        second = counter._ticker
        assert second is not None and second is not first
        await asyncio.sleep(0.01)
        assert not second.done()
        counter.update_observation_count(0)
        assert await asyncio.wait_for(second, 1.0) is None

    run(main())


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        (b"21.5", b"21.5"), (b" -3e1 \n", b"-3e1"), (b"+4", b"+4"), (b".5", b".5"),
        (b"7.", b"7."), (b"1E-2", b"1E-2"),
        # Python's float() takes these too; none is a decimal number (probe BM: 1_000 was).
        (b"1_000", None), (b"nan", None), (b"-inf", None), (b"Infinity", None),
        ("\u0661\u0662".encode(), None),  # Arabic-Indic digits
        (b"21\x1c", None), (b"2 1", None), (b"0x10", None), (b"1e999", None), (b"", None),
        (b".", None), (b"e5", None), (b"--1", None),
    ],
)
def test_the_demo_temp_takes_a_decimal_number_only(payload: bytes, stored: bytes | None) -> None:
    """`/temp`'s PUT: a finite decimal number in text/plain (2.04, kept without the spaces
    around it), 4.00 for anything else."""
    temp = demo.Temperature()

    async def main() -> None:
        response = await temp.render_put(Message(code=PUT, payload=payload))
        if stored is None:
            assert (response.code, response.payload) == (
                BAD_REQUEST, b"expected a number, such as 21.5")
            assert temp.value == b""
        else:
            assert response.code == CHANGED and temp.value == stored

    run(main())


def test_the_demo_site_has_its_four_resources() -> None:
    links = str(demo.demo_site(0.05).get_resources_as_linkheader())
    assert "</hello>" in links and "</counter>" in links and "obs" in links
    assert "</temp>" in links


def test_the_demo_counter_counts_seconds_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    intervals: list[float] = []
    real = demo.Counter

    def counter(interval: float) -> demo.Counter:
        intervals.append(interval)
        return real(interval)

    monkeypatch.setattr(demo, "Counter", counter)
    demo.demo_site()
    demo.demo_site(0.25)
    assert intervals == [1.0, 0.25]


def conditional(code: Any, *, if_match: tuple[bytes, ...] = (), if_none_match: bool = False,
                payload: bytes = b"") -> Message:
    """A request as aiocoap hands it to a resource's `render`."""
    message = Message(code=code, payload=payload)
    message.direction = Direction.INCOMING
    message.opt.if_match = if_match
    message.opt.if_none_match = if_none_match
    message.remote = SimpleNamespace()
    return message


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("name", ["hello", "counter", "core"])
@pytest.mark.parametrize(("if_match", "if_none_match", "code"), [
    ((), False, CONTENT),
    ((b"",), False, CONTENT),  # an empty If-Match matches any existing representation
    ((b"\xee",), False, PRECONDITION_FAILED),  # they have no ETag for it to match
    ((b"\xee", b""), False, CONTENT),  # one value of several
    ((), True, PRECONDITION_FAILED),  # they exist
])  # fmt: skip
def test_the_demo_resources_evaluate_if_match_and_if_none_match(
    name: str, if_match: tuple[bytes, ...], if_none_match: bool, code: Any
) -> None:
    """RFC 7252 §5.10.8: /hello, /counter and /.well-known/core always exist, without an ETag;
    a precondition not fulfilled is 4.12 and the method is not performed (aiocoap's own
    resources ignored both, probe CB)."""
    site = demo.demo_site(0.05)
    resources = {"hello": demo.Hello(), "counter": demo.Counter(0.05),
                 "core": demo._Core(site.get_resources_as_linkheader, impl_info=None)}

    async def main() -> None:
        answer = await resources[name].render(
            conditional(GET, if_match=if_match, if_none_match=if_none_match))
        assert answer.code == code, answer.payload
        if code == PRECONDITION_FAILED:
            assert answer.payload in (b"If-Match: no current representation matches",
                                      b"If-None-Match: the resource exists")

    run(main())


def test_a_precondition_on_a_method_the_resource_lacks_stays_4_05() -> None:
    """The method is refused before any precondition is evaluated: 4.05, not 4.12."""
    async def main() -> None:
        with pytest.raises(UnallowedMethod):
            await demo.Hello().render(conditional(PUT, if_none_match=True, payload=b"x"))

    run(main())


def test_the_demo_temp_has_an_etag_per_reading_and_a_representation_once_read() -> None:
    """RFC 7252 §5.10.6: the same reading has the same ETag, another reading another; before
    the first reading /temp has no representation, so If-Match fails and If-None-Match
    holds (§5.10.8), and a PUT refused by a precondition changes nothing."""
    temp = demo.Temperature()

    async def main() -> None:
        empty = await temp.render(conditional(GET))
        assert (empty.code, empty.payload, empty.opt.etag) == (CONTENT, b"", None)
        refused = await temp.render(conditional(PUT, if_match=(b"",), payload=b"5"))
        assert refused.code == PRECONDITION_FAILED and temp.value == b""
        created = await temp.render(conditional(PUT, if_none_match=True, payload=b"5"))
        assert created.code == CHANGED and temp.value == b"5"
        etag = (await temp.render(conditional(GET))).opt.etag
        assert etag is not None and 1 <= len(etag) <= 8
        again = await temp.render(conditional(PUT, if_none_match=True, payload=b"6"))
        assert again.code == PRECONDITION_FAILED and temp.value == b"5"
        assert (await temp.render(conditional(PUT, if_match=(etag,), payload=b"6"))).code == (
            CHANGED)
        other = (await temp.render(conditional(GET))).opt.etag
        assert other not in (None, etag)
        assert (await temp.render(conditional(PUT, if_match=(etag,), payload=b"7"))).code == (
            PRECONDITION_FAILED)
        assert (await temp.render(conditional(PUT, payload=b"5"))).code == CHANGED
        assert (await temp.render(conditional(GET))).opt.etag == etag  # the same reading

    run(main())
