"""Request bodies at a coaps server (RFC 7959 Block1): the server-wide bound on a body, which
the transport enforces before aiocoap assembles anything (`iotdtls.coap.uploads`; probe AX:
64 MB in 1 KiB blocks kept a server busy ~100 s, and the demo's /temp, which takes 32 bytes,
assembled 1 MB before answering 4.13)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from typing import Any, cast

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from iotdtls.cli import coap as coap_cli
from iotdtls.coap import server_context, uploads
from iotdtls.errors import ConfigError
from tests.coap_support import (
    LARGE,
    SERVER_CREDENTIALS,
    SETTINGS,
    CoapSite,
    coaps_client,
    coaps_server,
    device,
    put_block,
    raw_request,
    run,
    uri,
)
from tests.peers import LOCALHOST, free_udp_port

TOO_LARGE = Code.REQUEST_ENTITY_TOO_LARGE
CONTINUE = Code.CONTINUE


@pytest.mark.req("COAP-1")
def test_a_block_past_the_bound_is_answered_4_13_with_size1_and_never_assembled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Blocks up to the bound are aiocoap's (2.31 Continue); the block that would take the
    body past it is answered 4.13 with Size1 = the bound (RFC 7959 §2.9.3), piggybacked on
    the ACK of its message ID with its token, and the resource never sees the body; the
    probe's stream of 1 KiB blocks to /temp stops at the default 64 KiB. A debug line names
    the association, the code and the diagnostic."""
    site = CoapSite()
    caplog.set_level(logging.DEBUG, "iotdtls.coap")

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            codes = []
            for num in range(70):
                answer = await dev.ask(put_block(num, num, True, b"7" * 1024, path="temp"))
                assert answer is not None
                codes.append(answer.code)
                if answer.code == TOO_LARGE:
                    break
            assert codes == [CONTINUE] * 64 + [TOO_LARGE]
            assert (answer.mtype, answer.mid, answer.token) == (aiocoap.ACK, 64, b"up")
            assert answer.opt.size1 == uploads.DEFAULT_MAX_BODY_SIZE == 65536
            assert answer.opt.block1 is None
            assert answer.payload == b"at most 65536 bytes"

    run(main())
    [said] = [r.getMessage() for r in caplog.records if "answered to a request" in r.getMessage()]
    assert re.fullmatch(r"<ServerRemote coaps://127\.0\.0\.1:\d+ psk identity b'Client_identity'>: "
                        r"4\.13 Request Entity Too Large answered to a request "
                        r"\(at most 65536 bytes\)", said), said


@pytest.mark.req("COAP-1")
def test_the_bound_counts_offset_plus_payload_and_size1_and_answers_a_non_with_a_non() -> None:
    """At a bound of 2048: a last block ending at 2048 exactly is taken; one byte more is
    refused; so is a first block whose Size1 announces 2049 bytes (RFC 7959 §4), a request
    without Block1 whose payload alone is past it, and a block far beyond (its number alone);
    a NON request gets a NON 4.13 with its token."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site, max_body_size=2048) as server, device(server.address) as dev:
            assert (await dev.ask(put_block(1, 0, True, b"a" * 1024)) or aiocoap.Message()).code \
                == CONTINUE
            done = await dev.ask(put_block(2, 1, False, b"b" * 1024))
            assert done is not None and done.code == aiocoap.CHANGED
            assert site.large.stored == b"a" * 1024 + b"b" * 1024
            refused = [
                put_block(3, 1, False, b"c" * 1024 + b"!"),  # ends at 2049
                put_block(4, 0, True, b"a" * 1024, size1=2049),
                put_block(5, 1000, True, b"d" * 16, szx=0),
            ]
            plain = aiocoap.Message(code=aiocoap.PUT, uri_path=("large",), payload=b"e" * 2049)
            plain.mtype, plain.mid, plain.token = aiocoap.CON, 6, b"p"
            refused.append(plain.encode())
            for data in refused:
                answer = await dev.ask(data)
                assert answer is not None and answer.code == TOO_LARGE, answer
                assert answer.mtype == aiocoap.ACK and answer.opt.size1 == 2048
            taken = await dev.ask(put_block(7, 0, True, b"a" * 1024, size1=2048))
            assert taken is not None and taken.code == CONTINUE
            non = await dev.ask(put_block(8, 2, True, b"f" * 1024, mtype=aiocoap.NON,
                                          token=b"non"))
            assert non is not None and (non.mtype, non.code, non.token) == (
                aiocoap.NON, TOO_LARGE, b"non")
            assert non.opt.size1 == 2048
        assert site.large.stored == b"a" * 1024 + b"b" * 1024

    run(main())


@pytest.mark.req("COAP-1")
def test_aiocoap_s_own_blockwise_put_meets_the_bound() -> None:
    """aiocoap's client PUTs 4 KiB in blocks: taken at a bound of 4096, 4.13 with Size1 at
    4095 (the resource untouched)."""
    site = CoapSite()

    async def main() -> None:
        for bound, code in ((4096, aiocoap.CHANGED), (4095, TOO_LARGE)):
            async with coaps_server(site, max_body_size=bound) as server, coaps_client() as client:
                put = aiocoap.Message(code=aiocoap.PUT, uri=uri(server.address, "large"),
                                      payload=LARGE)
                response = await client.request(put).response
                assert response.code == code
                if code == TOO_LARGE:
                    assert response.opt.size1 == 4095
                else:
                    assert site.large.stored == LARGE
                site.large.stored = b""
        assert site.large.stored == b""

    run(main())


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (-1, "-1"), (True, "True"), (1.5, "float"), ("64k", "str"), (None, "None"),
     pytest.param(-(10**5000), "an int of 16610 bits", id="wide")],
)
def test_the_bound_is_a_whole_number_of_bytes(value: object, shown: str) -> None:
    """Refused in one line naming what was given: an integer as itself (one wider than 64 bits
    by its size: the repr of -10**5000 raised ValueError, not ConfigError), anything else by
    its type."""
    async def main() -> None:
        message = f"max_body_size must be a whole number of bytes, at least 1, got {shown}"
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            await server_context(None, (LOCALHOST, 0), credentials=SERVER_CREDENTIALS,
                                 max_body_size=cast(Any, value))

    run(main())


def test_a_bound_of_one_byte_is_taken() -> None:
    """The least bound, given to `server_context`, which hands it on: a body of one byte is
    taken, two are refused."""
    site = CoapSite()
    port = free_udp_port()

    async def main() -> None:
        context = await server_context(site.site, (LOCALHOST, port), credentials=SERVER_CREDENTIALS,
                                       max_body_size=1, **SETTINGS)
        try:
            async with device((LOCALHOST, port)) as dev:
                for payload, code in ((b"12", TOO_LARGE), (b"1", aiocoap.CHANGED)):
                    put = aiocoap.Message(code=aiocoap.PUT, uri_path=("large",), payload=payload)
                    put.mtype, put.mid, put.token = aiocoap.CON, len(payload), b"1"
                    answer = await dev.ask(put.encode())
                    assert answer is not None and answer.code == code
        finally:
            await context.shutdown()
        assert site.large.stored == b"1"

    run(main())


def test_a_body_without_block1_is_its_payload_alone() -> None:
    """Without Block1 the body ends with the payload: a payload of the bound exactly is taken."""
    plain = aiocoap.Message(code=aiocoap.PUT, uri_path=("large",), payload=b"e" * 2048)
    assert uploads.refusal(plain, 2048) is None
    plain.payload += b"!"
    refused = uploads.refusal(plain, 2048)
    assert refused is not None and (refused.code, refused.opt.size1) == (TOO_LARGE, 2048)


def test_the_command_line_default_is_the_library_s() -> None:
    assert coap_cli.DEFAULT_MAX_BODY_SIZE == uploads.DEFAULT_MAX_BODY_SIZE


INCOMPLETE = Code.REQUEST_ENTITY_INCOMPLETE


@pytest.mark.req("COAP-1")
def test_a_gap_in_the_blocks_is_4_08_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Block 0 with "more", then block 5 (probe AX): aiocoap's spool raised ValueError, its
    handler answered 5.00 and logged a 20-line traceback, per gap (200 gaps: 4,201 lines).
    Now 4.08 Request Entity Incomplete (RFC 7959 §2.3), nothing logged above debug, and the
    upload then goes on from where it stood."""
    caplog.set_level(logging.INFO)
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            codes = []
            for round_ in range(20):
                for num in (0, 5):
                    answer = await dev.ask(put_block(2 * round_ + num, num, True, b"1" * 64,
                                                     szx=2, token=bytes([round_])))
                    assert answer is not None
                    codes.append(answer.code)
            assert codes == [CONTINUE, INCOMPLETE] * 20
            assert answer.mtype == aiocoap.ACK and answer.token == bytes([19])
            assert answer.payload == b"expected the block at byte 64: start again from block 0"
            done = await dev.ask(put_block(100, 1, False, b"2" * 10, szx=2))
            assert done is not None and done.code == aiocoap.CHANGED
        assert site.large.stored == b"1" * 64 + b"2" * 10

    run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.req("COAP-1")
def test_blocks_out_of_order_are_4_08_and_a_retransmission_passes() -> None:
    """A block of no upload started, an overlap, a block after the last: 4.08. A block sent
    again with its message ID (a retransmission, RFC 7252 §4.2), even block 0 after block 1,
    gets aiocoap's answer again, and the upload goes on."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            async def code(data: bytes) -> Code:
                answer = await dev.ask(data)
                assert answer is not None
                return answer.code

            assert await code(put_block(1, 3, True, b"x" * 1024)) == INCOMPLETE  # none started
            assert await code(put_block(2, 0, True, b"a" * 1024)) == CONTINUE
            assert await code(put_block(3, 1, True, b"b" * 1024)) == CONTINUE
            assert await code(put_block(3, 1, True, b"b" * 1024)) == CONTINUE  # again
            assert await code(put_block(2, 0, True, b"a" * 1024)) == CONTINUE  # again, late
            assert await code(put_block(4, 3, True, b"x" * 1024)) == INCOMPLETE  # a gap
            # 512-byte blocks from byte 1536: overlaps the body
            assert await code(put_block(5, 3, True, b"x" * 512, szx=5)) == INCOMPLETE
            # the client may go on in smaller blocks (RFC 7959 §2.3): 512 bytes at byte 2048
            assert await code(put_block(6, 4, True, b"c" * 512, szx=5)) == CONTINUE
            assert await code(put_block(7, 5, False, b"d" * 100, szx=5)) == aiocoap.CHANGED
            assert site.large.stored == b"a" * 1024 + b"b" * 1024 + b"c" * 512 + b"d" * 100
            assert await code(put_block(8, 6, False, b"e" * 10, szx=5)) == INCOMPLETE  # after
            assert site.large.stored.endswith(b"d" * 100)

    run(main())


BAD_REQUEST = Code.BAD_REQUEST


@pytest.mark.req("COAP-1")
def test_a_block_aiocoap_refuses_for_its_size_is_not_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A block with "more" shorter than its block size, which aiocoap refuses (4.00) without
    touching its body, is not noted either (probe BM): the block sent again whole continues
    the upload (it was then noted, and the block after got a false 4.08), and a gap after it
    is 4.08 here (it reached aiocoap: 5.00 and a ValueError traceback logged)."""
    caplog.set_level(logging.INFO)
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            async def answer(mid: int, num: int, more: bool, payload: bytes, szx: int = 2,
                             ) -> tuple[Code, bytes]:
                got = await dev.ask(put_block(mid, num, more, payload, szx=szx))
                assert got is not None
                return got.code, got.payload

            assert (await answer(1, 0, True, b"a" * 64))[0] == CONTINUE
            assert await answer(2, 1, True, b"b" * 10) == (
                BAD_REQUEST, b"Payload size does not match Block1")
            assert (await answer(3, 1, True, b"b" * 64))[0] == CONTINUE
            assert (await answer(4, 2, False, b"c" * 10))[0] == aiocoap.CHANGED
            assert site.large.stored == b"a" * 64 + b"b" * 64 + b"c" * 10
            # The probe's gap: block 0, a short block 1, a 16-byte block 5 (byte 80).
            assert (await answer(5, 0, True, b"a" * 64))[0] == CONTINUE
            assert (await answer(6, 1, True, b"b" * 16))[0] == BAD_REQUEST
            assert await answer(7, 5, True, b"x" * 16, szx=0) == (
                INCOMPLETE, b"expected the block at byte 64: start again from block 0")
            # BERT (SZX 7, RFC 8323 §6): whole 1024-byte blocks, two at once, are taken.
            assert (await answer(9, 0, True, b"a" * 1024, szx=7))[0] == CONTINUE
            assert (await answer(10, 1, True, b"b" * 1000, szx=7))[0] == BAD_REQUEST
            assert (await answer(11, 1, True, b"b" * 2048, szx=7))[0] == CONTINUE
            assert (await answer(12, 3, False, b"c", szx=7))[0] == aiocoap.CHANGED
            assert site.large.stored == b"a" * 1024 + b"b" * 2048 + b"c"

    run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.req("COAP-1")
def test_the_latest_block_with_a_new_message_id_is_4_08(caplog: pytest.LogCaptureFixture) -> None:
    """The latest block taken, sent again with a new message ID, is no retransmission: aiocoap's
    duplicate detection does not answer it, and its spool raised ValueError for the overlap
    (5.00 and a traceback logged). Now 4.08 here, and the upload goes on from where it stood;
    with its own message ID it is aiocoap's again (2.31 once more)."""
    caplog.set_level(logging.INFO)
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            async def code(mid: int, num: int, more: bool, payload: bytes) -> Code:
                got = await dev.ask(put_block(mid, num, more, payload, szx=2))
                assert got is not None
                return got.code

            assert await code(1, 0, True, b"a" * 64) == CONTINUE
            assert await code(2, 1, True, b"b" * 64) == CONTINUE
            assert await code(3, 1, True, b"b" * 64) == INCOMPLETE  # a new message ID
            assert await code(2, 1, True, b"b" * 64) == CONTINUE  # a retransmission
            assert await code(4, 2, False, b"c" * 10) == aiocoap.CHANGED
            assert site.large.stored == b"a" * 64 + b"b" * 64 + b"c" * 10

    run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # `Uploads` alone (the transport hands aiocoap's duplicates on before asking it): the
    # latest block's message ID is a retransmission's, whatever the block says.
    noted = uploads.Uploads()
    for mid, num in ((1, 0), (2, 1)):
        assert noted.out_of_order(aiocoap.Message.decode(put_block(mid, num, True, b"u" * 64,
                                                                   szx=2))) is None
    again = aiocoap.Message.decode(put_block(2, 1, True, b"u" * 64, szx=2))
    assert noted.out_of_order(again) is None
    again.mid = 3
    assert noted.out_of_order(again) == "expected the block at byte 128: start again from block 0"
    # Block 0's message ID is noted too (M15: None): a block 1 sent with it is answered by
    # aiocoap as block 0's retransmission, taking nothing, so block 2 after it is out of order.
    fresh = uploads.Uploads()
    for mid, num in ((7, 0), (7, 1)):
        assert fresh.out_of_order(aiocoap.Message.decode(put_block(mid, num, True, b"u" * 64,
                                                                   szx=2))) is None
    after = aiocoap.Message.decode(put_block(8, 2, True, b"u" * 64, szx=2))
    assert fresh.out_of_order(after) == "expected the block at byte 64: start again from block 0"


def test_an_upload_is_noted_where_it_stands() -> None:
    """`Uploads` alone: a block after the last block of an upload, whether that was block 0
    or a later one, is out of order; block 0 sent again makes its upload the latest used, so
    that a further upload past `UPLOADS_TRACKED` makes another one no longer noted."""
    noted = uploads.Uploads()
    mids = itertools.count()

    def out(num: int, more: bool, upload: int = 0) -> str | None:
        block = put_block(next(mids), num, more, b"u" * 64, szx=2, query=(f"n={upload}",))
        return noted.out_of_order(aiocoap.Message.decode(block))

    assert out(0, False) is None  # an upload of one block: complete
    assert out(1, True) == "expected the block at byte 64: start again from block 0"
    assert (out(0, True), out(1, False)) == (None, None)  # complete at its second block
    assert out(2, True) == "expected the block at byte 128: start again from block 0"
    noted.clear()
    for upload in range(uploads.UPLOADS_TRACKED):
        assert out(0, True, upload) is None
    assert out(0, True, 0) is None  # started again: now the latest used
    assert out(0, True, uploads.UPLOADS_TRACKED) is None  # upload 1 goes, the least recent
    assert len(noted) == uploads.UPLOADS_TRACKED
    assert out(5, True, 0) is not None  # still noted: the gap is seen
    assert out(5, True, 1) is None  # no longer noted: aiocoap's to judge


@pytest.mark.req("COAP-1")
def test_uploads_noted_per_association_are_bounded_and_let_go_at_its_end() -> None:
    """At most UPLOADS_TRACKED uploads noted at once per association (by aiocoap's key: here
    the Uri-Query differs); the one no longer noted is aiocoap's to judge, which takes its
    next block (it holds its body): uploads at once are the client's right (probe AY: with 4
    noted, aiocoap's client PUTting to 5 resources at once got a false 4.08 for the first).
    What the association noted is let go when it ends."""
    site = CoapSite()

    def block(mid: int, num: int, query: int, more: bool = True) -> bytes:
        return put_block(mid, num, more, b"q" * 1024, query=(f"n={query}",))

    async def main() -> None:
        async with coaps_server(site) as server:
            async with device(server.address) as dev:
                for n in range(uploads.UPLOADS_TRACKED + 1):
                    answer = await dev.ask(block(n, 0, n))
                    assert answer is not None and answer.code == CONTINUE
                oldest = await dev.ask(block(100, 1, 0))
                assert oldest is not None and oldest.code == CONTINUE
                gap = await dev.ask(block(101, 5, 1))  # noted: out of order
                assert gap is not None and gap.code == Code.REQUEST_ENTITY_INCOMPLETE
                for n in range(2, uploads.UPLOADS_TRACKED + 1):
                    answer = await dev.ask(block(100 + 2 * n, 1, n))
                    assert answer is not None and answer.code == CONTINUE
                    done = await dev.ask(block(101 + 2 * n, 2, n, more=False))
                    assert done is not None and done.code == aiocoap.CHANGED
                done = await dev.ask(block(200, 2, 0, more=False))
                assert done is not None and done.code == aiocoap.CHANGED
                assert site.large.stored == b"q" * 3 * 1024
                whoami = await dev.ask(raw_request(300, b"g", "whoami"))
                assert whoami is not None
                [(remote, _)] = site.whoami.seen
                assert remote.uploads is not None
                assert len(remote.uploads) == uploads.UPLOADS_TRACKED
            for _ in range(100):
                if remote.ended:
                    break
                await asyncio.sleep(0.02)
            assert remote.ended and remote.uploads is None

    run(main())


@pytest.mark.req("COAP-1")
def test_aiocoap_s_client_puts_to_many_resources_at_once() -> None:
    """aiocoap's client PUTting 4 KiB to more resources at once than an association notes
    uploads (each Block1, one association): every PUT is 2.04 (probe AY: the first ones got
    4.08 once a fifth upload made them forgotten)."""
    site = CoapSite()
    count = uploads.UPLOADS_TRACKED + 4

    async def main() -> None:
        async with coaps_server(site) as server, coaps_client() as client:
            requests = [
                client.request(aiocoap.Message(code=aiocoap.PUT, payload=LARGE,
                                               uri=uri(server.address, "large") + f"?n={n}"))
                for n in range(count)
            ]
            responses = await asyncio.wait_for(
                asyncio.gather(*(request.response for request in requests)), 30
            )
            assert [r.code for r in responses] == [aiocoap.CHANGED] * count

    run(main())


@pytest.mark.req("COAP-1")
def test_a_repeated_block_passes_when_aiocoap_s_duplicates_are_out_of_sight() -> None:
    """Without aiocoap's store of duplicates (private: a later aiocoap may change it), the
    latest block taken, sent again with its message ID, is still handed on, as a
    retransmission, for aiocoap to answer again."""
    site = CoapSite()

    async def main() -> None:
        async with coaps_server(site) as server, device(server.address) as dev:
            server._duplicates = None
            for data in (put_block(1, 0, True, b"a" * 64, szx=2),
                         put_block(2, 1, True, b"b" * 64, szx=2),
                         put_block(2, 1, True, b"b" * 64, szx=2)):
                answer = await dev.ask(data)
                assert answer is not None and answer.code == CONTINUE
            done = await dev.ask(put_block(3, 2, False, b"c", szx=2))
            assert done is not None and done.code == aiocoap.CHANGED
        assert site.large.stored == b"a" * 64 + b"b" * 64 + b"c"

    run(main())
