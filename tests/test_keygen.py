"""`iotdtls keygen`: P-256 key files (mode 0600, atomic, never overwritten by accident), their
SubjectPublicKeyInfo and its SHA-256, and random PSKs."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotdtls._files import _planted, file_kind, write_atomically
from iotdtls.cli import main
from iotdtls.credentials import public_key_pin
from tests.pubkey_support import compressed_spki


def keygen(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["keygen", *args])
    out, err = capsys.readouterr()
    return status, out, err


def spki_of(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.req("RPK-3")
def test_ec_p256_writes_a_private_pkcs8_key_and_prints_its_spki_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "key.pem"
    status, printed, err = keygen(capsys, "ec-p256", "--out", str(out))
    assert status == 0 and err == ""
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert printed == hashlib.sha256(spki_of(pem)).hexdigest() + "\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


@pytest.mark.req("CFG-2")
def test_ec_p256_key_scalar_comes_from_os_urandom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private scalar is 32 bytes of `os.urandom` (FIPS 186-5 §A.4.2), never OpenSSL's own
    generator."""
    drawn: list[bytes] = []

    def fake_urandom(n: int) -> bytes:
        drawn.append(hashlib.sha256(b"keygen %d" % len(drawn)).digest()[:n])
        return drawn[-1]

    def refuse(*args: object) -> ec.EllipticCurvePrivateKey:
        raise AssertionError("a key from OpenSSL's generator, not os.urandom")

    monkeypatch.setattr(os, "urandom", fake_urandom)
    monkeypatch.setattr(ec, "generate_private_key", refuse)
    out = tmp_path / "key.pem"
    status, _, err = keygen(capsys, "ec-p256", "--out", str(out))
    assert status == 0 and err == ""
    key = serialization.load_pem_private_key(out.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.private_numbers().private_value.to_bytes(32, "big") in drawn


def test_ec_p256_keeps_an_existing_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "key.pem"
    out.write_bytes(b"precious")
    status, printed, err = keygen(capsys, "ec-p256", "--out", str(out))
    assert status == 2 and printed == ""
    assert err == f"iotdtls: error: {out} exists; add --force to replace it\n"
    assert out.read_bytes() == b"precious"
    assert keygen(capsys, "ec-p256", "--out", str(out), "--force")[0] == 0
    first = out.read_bytes()
    assert first.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert keygen(capsys, "ec-p256", "--out", str(out), "--force")[0] == 0
    assert out.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


def test_ec_p256_forced_through_a_symlink_writes_the_file_it_points_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `openssl genpkey -out` and `ssh-keygen -f` do: the key goes into the file the link
    points to and the link stays; the link was replaced by a new file, the old key left where
    every user of the link still found it. Without --force, a link to a file is a file that
    exists."""
    (tmp_path / "keys").mkdir()
    real = tmp_path / "keys" / "key.pem"
    real.write_bytes(b"old key")
    link = tmp_path / "key.pem"
    link.symlink_to(Path("keys", "key.pem"))
    status, _, err = keygen(capsys, "ec-p256", "--out", str(link))
    assert status == 2 and err == f"iotdtls: error: {link} exists; add --force to replace it\n"
    assert keygen(capsys, "ec-p256", "--out", str(link), "--force")[0] == 0
    assert link.is_symlink() and real.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["key.pem", "key.pem", "keys"]


def test_keygen_follows_no_symlink_of_another_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], give_away: Callable[[Path], str],
    in_shared_dir: Callable[[str], Path],
) -> None:
    """A dangling link another user planted in a shared directory (/tmp) sent root's new 0600
    key into that user's directory (realpath follows any link, whatever fs.protected_symlinks
    says): only links of this user, root or the directory's owner are followed there, at the
    name or in its directories, and the refusal names the link and its owner."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    out, folder = in_shared_dir("key.pem"), in_shared_dir("folder")
    out.symlink_to(theirs / "key.pem")
    folder.symlink_to(theirs)
    owner = give_away(out)
    give_away(folder)
    for given, link in [(out, out), (folder / "key.pem", folder)]:
        status, _, err = keygen(capsys, "ec-p256", "--out", str(given), "--force")
        assert status != 0 and list(theirs.iterdir()) == []
        assert err == (f"iotdtls: cannot write {given}: {link} is a symbolic link owned by "
                       f"{owner}, who could point it anywhere: name the file itself\n")


def test_roots_symlink_in_a_shared_directory_is_no_plant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link owned by root is followed in a directory others can write (as the kernel's
    fs.protected_symlinks does), whoever we are and whoever owns the directory; another
    user's is not."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    if os.geteuid() == 0:
        os.chown(shared, 4321, 4321)  # the directory's owner is neither root nor us
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def link_of(uid: int) -> os.stat_result:
        return os.stat_result((stat.S_IFLNK | 0o777, 0, 0, 1, uid, uid, 0, 0, 0, 0))

    assert not _planted(link_of(0), shared)
    assert _planted(link_of(1), shared)
    assert _planted(link_of(1), tmp_path / "gone")  # a directory it cannot read: refused


def test_keygen_follows_another_users_symlink_in_a_directory_only_we_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], give_away: Callable[[Path], str]
) -> None:
    """keygen --out through an admin's link in a directory nobody else can write failed ("a
    symbolic link owned by ..."), where the kernel's fs.protected_symlinks follows it: a link
    is refused only in a directory others can write (`test_keygen_follows_no_symlink_...`)."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    tmp_path.chmod(0o755)
    out = tmp_path / "key.pem"
    out.symlink_to(Path("theirs", "key.pem"))
    give_away(out)
    assert keygen(capsys, "ec-p256", "--out", str(out))[0] == 0
    assert out.is_symlink() and (theirs / "key.pem").read_bytes().startswith(b"-----BEGIN")


@pytest.mark.parametrize("what", ["fifo", "link to a fifo", "symlink loop", "directory"])
@pytest.mark.parametrize("command", ["ec-p256", "spki"])
def test_keygen_never_replaces_what_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, command: str
) -> None:
    """--out --force through a link to a device replaced the device itself (a link to
    /dev/null made /dev/null a 0600 key file): a FIFO, a device, a directory or a symlink loop
    there is refused in one line and left as it was (a FIFO stands in for a device here)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.pem"
    if what == "fifo":
        out = fifo
    elif what == "link to a fifo":
        out.symlink_to(fifo)
    elif what == "symlink loop":
        out.symlink_to(tmp_path / "other.pem")
        (tmp_path / "other.pem").symlink_to(out)
    else:
        out.mkdir()
    key = tmp_path / "key.pem"
    assert keygen(capsys, "ec-p256", "--out", str(key))[0] == 0
    args = ["--out", str(out), "--force"]
    status, _, err = keygen(capsys, command, *(["--key", str(key)] if command == "spki" else []),
                            *args)
    kind = {"fifo": "a FIFO", "link to a fifo": "a FIFO", "directory": "a directory",
            "symlink loop": "a symbolic link that leads nowhere (a loop)"}[what]
    assert status != 0
    assert err == f"iotdtls: cannot write {out}: {kind} is there, not a regular file\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert what != "directory" or out.is_dir()


def test_what_is_not_a_regular_file_is_refused_as_einval_naming_its_kind(tmp_path: Path) -> None:
    """`write_atomically` refuses a FIFO with the errno its docstring gives (EINVAL), for
    callers that test it; a mode of no type `stat` knows (none on Linux) is "a special file"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as refused:
        write_atomically(fifo, b"key")
    assert refused.value.errno == errno.EINVAL
    assert refused.value.strerror == "a FIFO is there, not a regular file"
    assert file_kind(stat.S_IFCHR) == "a character device"
    assert file_kind(stat.S_IFSOCK | 0o600) == "a socket"
    assert file_kind(0o600) == "a special file"


def test_the_temporary_file_is_made_beside_the_key_not_in_the_temp_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made in /tmp, the temporary file could not be renamed over a key on another filesystem
    (EXDEV): it is made in the key's directory. A temp directory that does not exist shows
    it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no such directory"))
    (tmp_path / "keys").mkdir()
    write_atomically(tmp_path / "keys" / "key.pem", b"key")
    assert (tmp_path / "keys" / "key.pem").read_bytes() == b"key"


def test_a_file_written_atomically_is_synced_before_it_takes_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash then leaves the old key or the new one whole, never an empty file under its
    name."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomically(tmp_path / "key.pem", b"key")
    assert synced and (tmp_path / "key.pem").read_bytes() == b"key"


def test_ec_p256_into_a_missing_directory_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "key.pem"
    status, _, err = keygen(capsys, "ec-p256", "--out", str(target))
    assert status == 1
    assert err == f"iotdtls: cannot write {target}: No such file or directory\n"


@pytest.mark.req("RPK-3")
def test_spki_writes_the_public_key_and_prints_the_same_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    pin = keygen(capsys, "ec-p256", "--out", str(key))[1]
    status, printed, err = keygen(capsys, "spki", "--key", str(key), "--out", str(pub))
    assert (status, printed, err) == (0, pin, "")
    assert serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki_of(key.read_bytes())
    assert public_key_pin(pub.read_bytes()).hex() + "\n" == pin
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert keygen(capsys, "spki", "--key", str(key)) == (0, pin, "")
    status, _, err = keygen(capsys, "spki", "--key", str(key), "--out", str(pub))
    assert status == 2 and "exists" in err
    assert keygen(capsys, "spki", "--key", str(key), "--out", str(pub), "--force")[0] == 0


def test_spki_of_a_public_key_prints_its_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keygen spki --key server.pub` was refused ("that is a public key, not a private key")
    though the help says "print a key's SPKI SHA-256" (probe CA): a public key file, PEM or
    DER, its point compressed or not, gives the same pin as its private key, and --out writes
    it uncompressed, as peers send it (RFC 8422 §5.1.2)."""
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    pin = keygen(capsys, "ec-p256", "--out", str(key))[1]
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    forms = {
        "pem": (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, (encoding, form) in forms.items():
        given = tmp_path / f"given.{name}"
        given.write_bytes(public.public_bytes(encoding, form))
        assert keygen(capsys, "spki", "--key", str(given)) == (0, pin, "")
    compressed = tmp_path / "compressed.der"
    assert isinstance(public, ec.EllipticCurvePublicKey)
    compressed.write_bytes(compressed_spki(public))
    assert keygen(capsys, "spki", "--key", str(compressed), "--out", str(pub)) == (0, pin, "")
    assert serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki_of(key.read_bytes())


def test_spki_of_something_that_is_not_a_key_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    for path in (bad, tmp_path / "missing.pem"):
        status, printed, err = keygen(capsys, "spki", "--key", str(path))
        assert status == 2 and printed == "" and err.count("\n") == 1


def test_spki_of_a_file_with_no_key_names_both_kinds_and_warns_of_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`spki --key` takes a public key too, but a file with no key said "no private key in
    it", and a 0644 one got the private-key permission warning before its kind was known
    (probe CB): the error names both kinds, alone on its line; a private key others can read
    still gets the warning, once it is known to be one."""
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"junk\n")
    junk.chmod(0o644)
    caplog.set_level(logging.WARNING, "iotdtls.cli")
    assert keygen(capsys, "spki", "--key", str(junk)) == (
        2,
        "",
        f"iotdtls: error: --key {junk}: no private or public key in it (PEM or DER, PKCS#8, "
        "SEC1 or SubjectPublicKeyInfo)\n",
    )
    assert caplog.messages == []
    key = tmp_path / "key.pem"
    pin = keygen(capsys, "ec-p256", "--out", str(key))[1]
    key.chmod(0o644)
    assert keygen(capsys, "spki", "--key", str(key)) == (0, pin, "")
    assert caplog.messages == [
        f"--key {key} is open to group or others (mode 0644): chmod 600 it or name a new "
        "file; used all the same"
    ]


@pytest.mark.req("CFG-2")
def test_psk_prints_fresh_random_keys_of_the_asked_length(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = {keygen(capsys, "psk")[1] for _ in range(4)}
    assert len(keys) == 4
    assert all(len(bytes.fromhex(k.strip())) == 16 for k in keys)
    assert len(bytes.fromhex(keygen(capsys, "psk", "--bytes", "32")[1].strip())) == 32
    for bad in ("0", "257"):
        with pytest.raises(SystemExit) as exited:
            main(["keygen", "psk", "--bytes", bad])
        assert exited.value.code == 2
        assert capsys.readouterr() == ("", "iotdtls: error: argument --bytes: must be a whole "
                                       f"number from 1 to 256, got '{bad}' (see --help)\n")
    for edge in (1, 256):  # the bounds themselves are allowed
        status, printed, err = keygen(capsys, "psk", "--bytes", str(edge))
        assert (status, err) == (0, "") and len(bytes.fromhex(printed.strip())) == edge


def test_keygen_is_a_subcommand_of_the_installed_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "iotdtls", "keygen", "psk"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(bytes.fromhex(done.stdout.strip())) == 16


def test_keygen_without_a_kind_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keygen"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err == "iotdtls: error: the following arguments are required: {ec-p256,spki,psk} " \
        "(see --help)\n"


@pytest.mark.parametrize("kind", ["psk", "ec-p256", "spki"])
def test_keygen_with_stdout_closed_fails_in_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keygen psk >&-` exited 0 having printed nothing: the key (or the pin) was lost."""
    key = tmp_path / "key.pem"
    keygen(capsys, "ec-p256", "--out", str(key))
    argv = {"psk": ["psk"], "ec-p256": ["ec-p256", "--out", str(tmp_path / "new.pem")],
            "spki": ["spki", "--key", str(key)]}[kind]
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["keygen", *argv]) == 1
    assert capsys.readouterr().err == "iotdtls: cannot print: stdout is closed\n"
    assert not (tmp_path / "new.pem").exists()  # no key whose pin nobody saw


def test_keygen_psk_started_with_stdout_closed_exits_1() -> None:
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "iotdtls",
                           "keygen", "psk"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "iotdtls: cannot print: stdout is closed\n")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_spki_never_writes_over_its_own_key(
    force: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spki --key K.pem --out K.pem --force` (or --out a symlink to K.pem) replaced the private
    key with the public key."""
    key, link = tmp_path / "key.pem", tmp_path / "link.pem"
    keygen(capsys, "ec-p256", "--out", str(key))
    pem = key.read_bytes()
    link.symlink_to(key.name)
    for out in (key, link):
        status, printed, err = keygen(capsys, "spki", "--key", str(key), "--out", str(out), *force)
        assert (status, printed) == (2, "")
        assert err == (f"iotdtls: error: --out {out} is the --key file: name another file for "
                       "the public key\n")
    assert key.read_bytes() == pem and link.is_symlink()


def test_an_empty_out_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out ''` said "cannot write : a directory is there, not a regular file"."""
    key = tmp_path / "key.pem"
    keygen(capsys, "ec-p256", "--out", str(key))
    for argv in (["ec-p256"], ["spki", "--key", str(key)]):
        status, printed, err = keygen(capsys, *argv, "--out", "")
        assert (status, printed) == (2, "")
        assert err == "iotdtls: error: --out is empty: name the file to write\n"
