"""Peer names in certificates: RFC 6125 server names (CRT-3) and EUI-64 client names (CRT-4).

Pure string rules, no ASN.1: `iotdtls.crypto.x509` takes the identifiers out of a certificate
and asks these functions whether they fit.

* `reference_identity`: the name the client was told to reach (RFC 6125 §6.2.1 "reference
  identifier"), as a lower-case A-label DNS name or an IP address (an IPv4-mapped one as the
  IPv4 address it is, `unmapped_address`). A bad one is the local
  configuration's fault: `ConfigError`. U-labels are converted with the standard library's
  IDNA 2003 codec, which maps some labels that IDNA 2008 (RFC 5890/5891, what RFC 6125 §6.4.2
  asks for) keeps, e.g. "faß" to "fass", another name: such a label is refused, to be given as
  its A-label (xn--...); a label the two convert alike (e.g. "bücher") is converted.
* `dns_name_matches`: one presented DNS-ID (or CN-ID) against that reference (RFC 6125 §6.4):
  case-insensitive, trailing dot ignored, and a wildcard only as the whole left-most label,
  standing for exactly one label (§6.4.3 rules 1 and 2). Partial-label wildcards (`f*.example`,
  the MAY of rule 3) are refused, and so is a wildcard over fewer than three labels (`*.com`),
  which would span a public suffix: without a public-suffix list, two labels is the line.
  `iotdtls.crypto.x509` gives it no CN-ID with a wildcard, which RFC 7252 §9.1.3.3 forbids.
* `canonical_eui64`: an EUI-64 in one of its usual spellings (`0123456789abcdef`,
  `01:23:45:67:89:ab:cd:ef`, `01-23-45-67-89-AB-CD-EF`), or None; the canonical form is the IEEE
  one, upper-case hex octets joined by hyphens (RFC 7252 §9.1.3.3 asks client certificates to
  carry an EUI-64 in subjectAltName or CN).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from encodings import idna

from iotdtls.errors import ConfigError

__all__ = [
    "IpAddress",
    "canonical_eui64",
    "dns_name_matches",
    "reference_identity",
    "unmapped_address",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 1035 §2.3.4: at most 255 octets on the wire, so 253 characters as text.
_MAX_DNS_NAME = 253
#: LDH labels (RFC 5890 §2.3.1), plus "_" which service-style names use in practice.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: Wildcards span one label and never a two-label name (see the module docstring).
_MIN_WILDCARD_LABELS = 3
#: What could be an IPv4 address (an IPv6 one has a colon); anything else is a DNS name.
_DOTTED_DIGITS = re.compile(r"[0-9.]+")
#: What inet_aton might read as an address: numbers in decimal, octal or hex ("0x7f.1").
_DOTTED_NUMBERS = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)

#: RFC 5892 §2.1 LetterDigits: the general categories IDNA 2008 may allow in a U-label.
_LETTER_DIGITS = frozenset({"Ll", "Lu", "Lo", "Nd", "Lm", "Mn", "Mc"})

_HEX = "[0-9A-Fa-f]{2}"
_EUI64 = re.compile(rf"(?:{_HEX}){{8}}|{_HEX}(?P<sep>[-:]){_HEX}(?:(?P=sep){_HEX}){{6}}")


def reference_identity(server_name: str) -> str | IpAddress:
    """The reference identifier for `server_name`: an IP address (without an IPv6 zone; an
    IPv4-mapped one as the IPv4 address it is, `unmapped_address`), or a DNS name in
    lower-case ASCII (U-labels converted to A-labels, one trailing dot dropped).

    Raises `ConfigError` for anything that is neither (empty, a wildcard, bad labels, digits
    and dots that make no IP address), for an address in another spelling of inet_aton's
    ("127.1", "0x7f.1", "0x7f000001": RFC 6066 §3 permits no address literal in a HostName,
    and a resolver connects to 127.0.0.1 for them), and for a name whose last label is all
    digits ("host.123": no host name, RFC 3696 §2, RFC 1123 §2.1), and for an address in
    brackets ("[::1]": the brackets of a URI's host, RFC 3986 §3.2.2, are not part of it).
    """
    if server_name.startswith("[") and server_name.endswith("]"):
        raise ConfigError(
            f"server name {server_name!r} is neither a DNS name nor an IP address (give it "
            f"without brackets, {server_name[1:-1]!r})"
        )
    if ":" in server_name or _DOTTED_DIGITS.fullmatch(server_name):
        try:
            address = ipaddress.ip_address(server_name)
        except ValueError:
            pass
        else:
            # A zone ("fe80::1%eth0") is local to this host (RFC 4007 §11): the certificate's
            # iPAddress names the address alone, so the reference is the address without it.
            return unmapped_address(ipaddress.ip_address(address.packed))
    name = server_name[:-1] if server_name.endswith(".") else server_name
    if _DOTTED_DIGITS.fullmatch(server_name) or _inet_aton_address(name):
        # Digits and dots are no host name (RFC 1123 §2.1: a top-level label is alphabetic),
        # and "127.1" or "0x7f.1" is an address in inet_aton's shorthand, not one written out.
        raise ConfigError(
            f"server name {server_name!r} is neither a DNS name nor an IP address "
            "(write an IPv4 address in full: four decimal numbers 0-255)"
        )
    try:
        ascii_name = ".".join(_a_label(server_name, label) for label in name.split(".")).lower()
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if (
        not ascii_name
        or len(ascii_name) > _MAX_DNS_NAME
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise ConfigError(f"server name {server_name!r} is neither a DNS name nor an IP address")
    if labels[-1].isdigit():
        raise ConfigError(
            f"server name {server_name!r} is neither a DNS name nor an IP address "
            "(the last label of a DNS name is not all digits, RFC 3696 §2)"
        )
    return ascii_name


def unmapped_address(address: IpAddress) -> IpAddress:
    """The IPv4 address an IPv4-mapped IPv6 `address` stands for (`::ffff:127.0.0.1`:
    127.0.0.1, RFC 4291 §2.5.5.2), else `address`. Such an address only ever reaches the
    IPv4 node (its datagrams go over IPv4), whose iPAddress is its 4 octets (RFC 5280
    §4.2.1.6): the reference identifier a client reaching it checks."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inet_aton_address(name: str) -> bool:
    """Whether `name` is an IPv4 address as inet_aton, and so the resolver, reads it: one to
    four numbers, each decimal, octal (leading 0) or hex (0x), the last filling what is left
    of the 32 bits ("0x7f.1", "2130706433", "127.0.0.0x1" are all 127.0.0.1)."""
    if not _DOTTED_NUMBERS.fullmatch(name):
        return False  # glibc's inet_aton also takes "1.2.3.4 anything": no name of ours
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def _a_label(server_name: str, label: str) -> str:
    """`label` as ASCII: an ASCII label as it is, a U-label as its A-label (RFC 5891 §4.4).

    IDNA 2003 nameprep (RFC 3491) maps more than case: "ß" to "ss", final sigma to the medial
    one, the joiners ZWJ/ZWNJ to nothing, compatibility forms such as full-width letters (NFKC).
    IDNA 2008 maps none of these (RFC 5894 §7.2), so its A-label differs or there is none:
    a label nameprep changes beyond lower case (and NFC) is a `ConfigError` naming it. So is
    a character other than a letter, mark or digit (RFC 5892 §2.1), such as a symbol or the
    ideographic full stop IDNA 2003 reads as a dot: IDNA 2008 allows none of them (save a few
    in context, which the A-label still spells). Raises UnicodeError when the codec refuses
    the label.
    """
    if label.isascii():
        return label
    prepared = idna.nameprep(label)
    if prepared != unicodedata.normalize("NFC", label.lower()):
        raise ConfigError(
            f"server name {server_name!r}: IDNA 2003 maps its label {label!r} to {prepared!r} "
            f"and IDNA 2008 (RFC 5890) does not: write {prepared!r} if that is the label meant, "
            "else give the name's A-label (xn--...), if it has one"
        )
    for char in label:
        if not char.isascii() and unicodedata.category(char) not in _LETTER_DIGITS:
            raise ConfigError(
                f"server name {server_name!r}: its label {label!r} holds {char!r}, which IDNA "
                "2008 (RFC 5892) does not allow: give the name's A-label (xn--...) if it has one"
            )
    return idna.ToASCII(label).decode("ascii")


def dns_name_matches(reference: str, presented: str) -> bool:
    """Whether the presented identifier `presented` (a dNSName or CN) names `reference`.

    `reference` comes from `reference_identity` (lower case, no trailing dot, no wildcard).
    RFC 6125 §6.4.1 (case-insensitive comparison) and §6.4.3 (wildcards, as narrowed above).
    """
    name = presented.lower()
    if name.endswith("."):
        name = name[:-1]
    if "*" not in name:
        return name == reference
    # The wildcard is the whole left-most label and stands for exactly one label; a "*"
    # anywhere else can never equal a label of the reference, which has none.
    labels = name.split(".")
    if labels[0] != "*" or len(labels) < _MIN_WILDCARD_LABELS:
        return False
    return reference.split(".")[1:] == labels[1:]


def canonical_eui64(text: str) -> str | None:
    """`01-23-45-67-89-AB-CD-EF` for any usual spelling of that EUI-64, None for anything else.

    Accepted: 16 hex digits, or 8 hex octets separated throughout by `-` or throughout by `:`;
    either case.
    """
    if not _EUI64.fullmatch(text):
        return None
    digits = text.replace("-", "").replace(":", "").upper()
    return "-".join(digits[i : i + 2] for i in range(0, 16, 2))
