"""The secrets a node keeps in its data dir, and the data dir's own protection.

A node never starts open by accident: without ``--api-token`` the first start writes a random
admin token to ``<data-dir>/api-token``, and without ``--encrypt`` a random cluster key to
``<data-dir>/cluster-key``; later starts read them back. The data dir is made ``0700`` and the
two files ``0600``, so another local user can read neither (``docs/security.md``).

A node that joins an existing cluster (``--join``, ``--retry-join``, or any agent) cannot make
up the key: it must be given the cluster's, and starting without it is a ``ConfigError`` that
says where to find it.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
from pathlib import Path

from dkron_lab.config import Config
from dkron_lab.errors import ValidationError

__all__ = [
    "API_TOKEN_FILE",
    "CLUSTER_KEY_FILE",
    "ConfigError",
    "api_token",
    "cluster_key",
    "keep_private",
    "read_secret",
    "secure_data_dir",
    "write_private",
]

log = logging.getLogger(__name__)

API_TOKEN_FILE = "api-token"
CLUSTER_KEY_FILE = "cluster-key"


class ConfigError(ValidationError):
    """The node cannot start with this configuration; the message says what to change."""


def secure_data_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as ``0700``; tighten an existing one that is looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("data dir %s was mode %o: made 0700 (only this user may read it)", path, mode)
        path.chmod(0o700)
    return path


def secure_files(path: Path) -> None:
    """``secure_data_dir(path)``, and every file in it ``0600``: new files are, an older
    version's were not (the raft journal holds every job's secrets)."""
    secure_data_dir(path)
    for file in path.iterdir():
        if file.is_file() and not file.is_symlink():
            keep_private(file)


def require_asserts() -> None:
    """Refuse ``python -O``: pysyncobj checks the cluster key of each connection with an
    ``assert``, which ``-O`` removes."""
    if not __debug__:
        raise ConfigError(
            "dkron-lab does not run under python -O: pysyncobj checks the cluster key of "
            "each connection with an assert, which -O removes; start it without -O"
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new ``0600`` file, on disk before this returns; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def keep_private(path: Path, *, quiet: bool = False) -> None:
    """Make the file ``path`` ``0600`` if others may read it (nothing if it does not exist);
    say so in the log unless ``quiet`` (for files a library re-creates at will)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        if not quiet:
            log.warning("%s was mode %o: made 0600 (only this user may read it)", path, mode)
        path.chmod(0o600)


def read_secret(path: Path) -> str:
    """The secret in ``path`` (stripped), tightening its mode to ``0600`` if it is looser."""
    keep_private(path)
    return path.read_text(encoding="utf-8").strip()


def _kept(path: Path, make: str) -> str:
    if path.exists():
        return read_secret(path)
    secure_data_dir(path.parent)
    try:
        write_private(path, make)
    except FileExistsError:  # another process made it first: use theirs
        return read_secret(path)
    return make


def api_token(config: Config) -> str:
    """The admin token the API requires: ``--api-token``, else the data dir's (made on first
    start); ``""`` only with ``--no-auth``."""
    if config.no_auth:
        return ""
    if config.api_token:
        return config.api_token
    return _kept(config.data_dir / API_TOKEN_FILE, secrets.token_urlsafe(32))


def cluster_key(config: Config) -> str:
    """The cluster key (base64): ``--encrypt``, else the data dir's, else a new one for a
    server that starts a cluster of its own. Raises ``ConfigError`` for a joining node."""
    if config.encrypt:
        return config.encrypt
    path = config.data_dir / CLUSTER_KEY_FILE
    if path.exists():
        return read_secret(path)
    if config.join or config.retry_join or not config.server:
        raise ConfigError(
            "this node joins a cluster, so it needs the cluster's key: pass --encrypt KEY "
            f"(or DKRON_ENCRYPT) with the key in {CLUSTER_KEY_FILE} of the first server's "
            'data dir, e.g. --encrypt "$(cat dkron.data/cluster-key)"'
        )
    return _kept(path, base64.b64encode(secrets.token_bytes(32)).decode())
