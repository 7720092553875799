"""Other "hosts" for the tests of remote nodes, and certificates for their TLS.

A host is, where this machine allows it (root, with network namespaces), a network
namespace of its own joined to this one by a veth pair, its processes in a mount
namespace with a /dev/shm of their own: nothing crosses between the hosts but TCP, as
between two machines. Where that is not allowed, it is a loopback address of its own
(127.0.0.N) and a ``ZEROHOP_SHM_PREFIX`` of its own (``ZEROHOP_TEST_HOSTS=loopback``
asks for that everywhere). ``Host.mode`` says which ran, and each test that uses one
prints it.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_numbers = itertools.count(1)
#: Where iceoryx2 keeps its files besides /dev/shm.
ICEORYX_ROOT = "/tmp/iceoryx2"


@dataclass
class Host:
    """Where a server "on another machine" listens and how to start it there."""

    address: str
    #: ``"netns"`` (own network and mount namespaces) or ``"loopback"``.
    mode: str
    #: The command prefix that runs a program on this host.
    prefix: list[str] = field(default_factory=list)
    #: Environment a program on this host needs besides this process's.
    env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def _run(*command: str) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30)
    except OSError:  # no `ip` or `unshare` here
        return False
    return done.returncode == 0


@contextmanager
def other_host() -> Iterator[Host]:
    """A host of its own for the length of the ``with`` (see the module docs)."""
    n = next(_numbers)
    tag = f"zh{os.getpid() % 100000}x{n}"
    subnet = 16 + (os.getpid() + n) % 200
    near, far = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
    wanted = os.environ.get("ZEROHOP_TEST_HOSTS", "netns") == "netns"  # or "loopback"
    added = wanted and os.geteuid() == 0 and _run("ip", "netns", "add", tag)
    made = added and (
            _run("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
            and _run("ip", "link", "set", f"{tag}b", "netns", tag)
            and _run("ip", "addr", "add", f"{near}/30", "dev", f"{tag}a")
            and _run("ip", "link", "set", f"{tag}a", "up")
            and _run("ip", "-n", tag, "addr", "add", f"{far}/30", "dev", f"{tag}b")
            and _run("ip", "-n", tag, "link", "set", f"{tag}b", "up")
            and _run("ip", "-n", tag, "link", "set", "lo", "up")
            and _run(
                "ip", "netns", "exec", tag, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", "mount -t tmpfs zh-shm /dev/shm",
            )
        )  # fmt: skip
    try:
        if made:
            # Its own /dev/shm and its own iceoryx2 root (/tmp/iceoryx2): not even a
            # file of its shared memory is visible here.
            os.makedirs(ICEORYX_ROOT, exist_ok=True)
            mounts = (
                f"mount -t tmpfs -o size=2g zh-shm /dev/shm && "
                f'mount -t tmpfs zh-iox {ICEORYX_ROOT} && exec "$@"'
            )
            prefix = [
                "ip", "netns", "exec", tag,
                "unshare", "--mount", "--propagation", "private", "sh", "-c", mounts, "sh",
            ]  # fmt: skip
            yield Host(far, "netns", prefix, {"ZEROHOP_SHM_PREFIX": f"{tag}_"})
        else:
            yield Host(f"127.0.0.{10 + n % 200}", "loopback", env={"ZEROHOP_SHM_PREFIX": f"{tag}_"})
    finally:
        if added:
            _run("ip", "link", "del", f"{tag}a")
            _run("ip", "netns", "del", tag)
        if not made:
            # Its servers are stopped by now; iceoryx2 keeps one management segment per
            # prefix for the machine's lifetime, which is the other host's to drop.
            for folder in (Path("/dev/shm"), Path(ICEORYX_ROOT)):
                for leftover in folder.glob(f"{tag}_*"):
                    leftover.unlink(missing_ok=True)


def certificates(folder: Path, name: str, address: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signed for ``address``: (ca, cert,
    key) PEM files, all generated here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = certificate(f"{name} test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(address, key, ca_name, ca_key, ca=False)
    paths = (folder / f"{name}-ca.pem", folder / f"{name}.pem", folder / f"{name}-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
