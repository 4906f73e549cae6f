"""TLS for the ``*-tls`` stacks: per-run certificates (trustme) and the client's ``ssl`` context.

Certificates are made fresh for every run and never committed: a throw-away CA and one server certificate
for ``127.0.0.1``, ``::1`` and ``localhost``, signed with ECDSA P-256 by default or RSA 2048
(``load.tls_key_type``), which makes a visibly larger handshake (a bigger certificate and signature).

The client uses Python's ``ssl`` module on pushbench's own counted connections, TLS 1.3 only, trusting only
the run's CA, and writes its session secrets to ``$SSLKEYLOGFILE`` when set (as curl and browsers do), so a
capture of a run can be decrypted in Wireshark.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

from pushbench.config import LoadConfig
from pushbench.stacks import Stack

SERVER_NAMES = ("127.0.0.1", "::1", "localhost")
_KEY_TYPES = {"ecdsa-p256": trustme.KeyType.ECDSA, "rsa2048": trustme.KeyType.RSA}


class CertificateError(Exception):
    """A certificate or key file cannot be made or used; the message names the file."""


@dataclass(frozen=True)
class CertFiles:
    ca_pem: Path  # what clients trust
    server_pem: Path  # private key + certificate chain in one PEM file (HAProxy's ``crt``)
    key_type: str


def make_certificates(folder: Path, key_type: str, extra_names: tuple[str, ...] = ()) -> CertFiles:
    """A fresh CA and server certificate in ``folder`` (created private to this user), for ``SERVER_NAMES`` and
    ``extra_names`` (an emulated path's server address)."""
    if key_type not in _KEY_TYPES:
        raise CertificateError(f"load.tls_key_type: unknown key type {key_type!r} (known: {', '.join(_KEY_TYPES)})")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(key_type=_KEY_TYPES[key_type], organization_name="pushbench run CA")
    cert = ca.issue_cert(*SERVER_NAMES, *extra_names, key_type=_KEY_TYPES[key_type])
    files = CertFiles(folder / "ca.pem", folder / "server.pem", key_type)
    ca.cert_pem.write_to_path(str(files.ca_pem))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.server_pem))
    os.chmod(files.server_pem, 0o600)
    return files


def client_context(
    stack: Stack, ca_file: str | os.PathLike[str], alpn: tuple[str, ...] | None = None
) -> ssl.SSLContext:
    """The client's TLS 1.3 context for ``stack``: the run's CA only (the system's when ``ca_file`` is empty, for
    an https target), ALPN as the stack offers (or ``alpn``), ``$SSLKEYLOGFILE``."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if str(ca_file) else None)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"{ca_file}: not a usable CA certificate: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    offer = stack.alpn if alpn is None else alpn
    if offer:
        ctx.set_alpn_protocols(list(offer))
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        ctx.keylog_filename = keylog
    return ctx


def check_server_pem(path: Path) -> None:
    """Fail with a line naming ``path`` unless it holds a usable private key and certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(path))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"{path}: not a usable certificate and private key: {exc}") from None


class CertStore:
    """A run's certificates: made on first use per key type in a private temporary folder, removed by ``close``;
    or the user's own (``load.tls_cert_file`` + ``tls_ca_file``), checked before use."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pushbench-tls-"))
        self._made: dict[tuple[str, tuple[str, ...]], CertFiles] = {}

    def for_load(self, load: LoadConfig, extra_names: tuple[str, ...] = ()) -> CertFiles:
        """The certificates of a cell; ``extra_names``: more addresses the server certificate must name."""
        if load.tls_cert_file:
            files = CertFiles(Path(load.tls_ca_file), Path(load.tls_cert_file), "file")
            check_server_pem(files.server_pem)
            check_ca_file(files.ca_pem)
            return files
        key = (load.tls_key_type, extra_names)
        if key not in self._made:
            folder = self.folder / "-".join((load.tls_key_type, *extra_names))
            self._made[key] = make_certificates(folder, load.tls_key_type, extra_names)
        return self._made[key]

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_ca_file(path: Path) -> None:
    """Fail with a line naming ``path`` unless it holds a CA certificate the client can trust."""
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"{path}: not a usable CA certificate: {exc}") from None
