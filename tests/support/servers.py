"""Authenticated servers for the tests: the embedded default's users, plus one for the tests.

The tests' own client deletes streams, purges between tests and watches core
subjects, which no role may. It gets a user of its own on the servers the tests
start; every process a test starts (workers, commands) connects with the
generated role credentials, as a user's would, so the suite runs them under
their roles' permissions.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import SecretStr

from engine import embedded
from engine.settings import Settings

ADMIN = "tests-admin"


def admin_config(data_dir: Path) -> tuple[Path, str]:
    """A config with the data directory's generated users and the tests' user; its password."""
    password = secrets.token_urlsafe(24)
    return embedded.auth_config(data_dir, [{"user": ADMIN, "password": password}]), password


def as_admin(settings: Settings, password: str) -> Settings:
    """``settings`` with the tests' user instead of a role's credentials."""
    return settings.model_copy(update={"nats_user": ADMIN, "nats_password": SecretStr(password)})


def violations(data_dir: Path) -> list[str]:
    """What the server refused a connection, from its log."""
    log = embedded.log_file(data_dir).read_text(errors="replace")
    return [line for line in log.splitlines() if "Violation" in line]
