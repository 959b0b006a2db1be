"""Generated credentials: one user and a strong random password per role, in private files.

The directory is 0700 and each file 0600, whatever the umask: another local
user can neither read a password nor list which roles exist. The same helpers
keep the logs and the audit log private. Files are
written whole and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class CredentialsError(RuntimeError):
    """A credentials file is missing, unreadable or not private."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: SecretStr


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created, and made 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (never briefly wider)."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def append_private(path: Path) -> int:
    """A descriptor appending to ``path``, which is made 0600 (also if it was wider before)."""
    private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    os.fchmod(descriptor, PRIVATE_FILE)
    return descriptor


def credentials_file(directory: Path, role: str) -> Path:
    return directory / f"{role}.json"


def load(directory: Path, role: str) -> Credentials:
    path = credentials_file(directory, role)
    try:
        mode = path.stat().st_mode & 0o777
        data = json.loads(path.read_text())
        credentials = Credentials(str(data["user"]), SecretStr(str(data["password"])))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"cannot read the {role} credentials in {path}: {exc}") from exc
    if mode & 0o077:
        raise CredentialsError(
            f"{path} is readable by others (mode {mode:o}): `chmod 600 {path}` and change "
            "the password, it may have been read"
        )
    return credentials


def ensure(directory: Path, roles: tuple[str, ...]) -> dict[str, Credentials]:
    """Each role's credentials in ``directory``, generating the missing ones."""
    private_dir(directory)
    found = {}
    for role in roles:
        path = credentials_file(directory, role)
        if not path.exists():
            password = secrets.token_urlsafe(32)  # 256 bits
            write_private(path, json.dumps({"user": role, "password": password}) + "\n")
        found[role] = load(directory, role)
    return found
