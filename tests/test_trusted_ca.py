"""trusted_ca_keys (RFC 6066 §6, CRT-8): a server holding several chains picks the first one
under a CA the client names, by key hash, certificate hash or name."""

from __future__ import annotations

import hashlib

import pytest

from iotdtls.crypto.x509 import (
    TrustStore,
    authority_identifiers,
    chain_matches_authority,
    select_chain_index,
)
from iotdtls.errors import ConfigError
from iotdtls.messages.constants import IdentifierType as T
from tests.pki import Issued, chain_der, intermediate, root, server_leaf

pytestmark = pytest.mark.req("CRT-8")


def two_chains(*, with_key_ids: bool = True) -> tuple[list[Issued], list[tuple[bytes, ...]]]:
    """Roots A and B, and a server chain (leaf, intermediate) under each."""
    roots = [root("root A"), root("root B")]
    chains = []
    for anchor in roots:
        middle = intermediate(anchor, f"CA under {anchor.cert.subject.rfc4514_string()}",
                              authority_key_id=with_key_ids)
        chains.append(chain_der(server_leaf(middle, authority_key_id=with_key_ids), middle))
    return roots, chains


def test_the_client_trust_store_selects_the_chain_under_its_root() -> None:
    roots, chains = two_chains()
    candidates = [authority_identifiers(chain) for chain in chains]
    for index, anchor in enumerate(roots):
        authorities = TrustStore([anchor.der]).trusted_authorities()
        assert select_chain_index(candidates, authorities) == index
        assert chain_matches_authority(chains[index], authorities)
        assert not chain_matches_authority(chains[1 - index], authorities)


def test_without_key_identifiers_the_root_key_matches_only_through_issuers() -> None:
    roots, chains = two_chains(with_key_ids=False)
    authorities = TrustStore([roots[1].der]).trusted_authorities()
    assert select_chain_index([authority_identifiers(c) for c in chains], authorities) is None
    issuers = [anchor.der for anchor in roots]
    candidates = [authority_identifiers(c, issuers=issuers) for c in chains]
    assert select_chain_index(candidates, authorities) == 1


def test_cert_hash_name_and_intermediate_key_identify_a_ca() -> None:
    roots, chains = two_chains(with_key_ids=False)
    issuers = [anchor.der for anchor in roots]
    root_b_hash = (T.cert_sha1_hash, hashlib.sha1(roots[1].der).digest())
    assert not chain_matches_authority(chains[1], [root_b_hash])
    assert chain_matches_authority(chains[1], [root_b_hash], issuers=issuers)
    root_b_name = (T.x509_name, roots[1].cert.subject.public_bytes())
    assert chain_matches_authority(chains[1], [root_b_name])
    assert not chain_matches_authority(chains[0], [root_b_name])
    intermediate_a = TrustStore([chains[0][1]]).trusted_authorities()
    assert select_chain_index([authority_identifiers(c) for c in chains], intermediate_a) == 0


def test_pre_agreed_unknown_and_empty_indications_select_nothing() -> None:
    roots, chains = two_chains()
    candidates = [authority_identifiers(chain) for chain in chains]
    assert select_chain_index(candidates, [(T.pre_agreed, b"")]) is None
    assert select_chain_index(candidates, [(T.key_sha1_hash, bytes(20))]) is None
    assert select_chain_index(candidates, []) is None
    assert select_chain_index([], TrustStore([roots[0].der]).trusted_authorities()) is None


def test_an_issuer_with_the_right_name_but_another_key_does_not_count() -> None:
    _, chains = two_chains(with_key_ids=False)
    impostor = root("root B")
    authorities = TrustStore([impostor.der]).trusted_authorities()
    candidates = [authority_identifiers(c, issuers=[impostor.der]) for c in chains]
    assert select_chain_index(candidates, authorities) is None


def test_a_bad_certificate_in_the_server_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        authority_identifiers([b"junk"])
    with pytest.raises(ConfigError):
        authority_identifiers(two_chains()[1][0], issuers=[b"junk"])
