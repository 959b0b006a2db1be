"""Typed settings, read from the environment (prefix ``ONEMANAGE_``).

One place decides every knob so that a worker, the CLI and the console started
with the same environment agree on stream limits, ack wait and credentials.
Leaving ``ONEMANAGE_NATS_URL`` unset means: use the embedded nats-server kept in
the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.services.limits import Limits


def default_data_dir() -> Path:
    """Where the embedded server's store, audit log and ports file live."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "onemanage"


class Settings(BaseSettings):
    """Everything a OneManage process needs to know about its NATS and streams."""

    model_config = SettingsConfigDict(
        env_prefix="ONEMANAGE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # Connection. No URL means the embedded server in data_dir, with its generated
    # credentials for ``role``. A configured server takes the role's file from
    # credentials_dir (as `onemanage server config` writes it), or the explicit
    # user/password, token, creds or nkey below.
    nats_url: Annotated[list[str], NoDecode] = Field(default_factory=list)
    role: Literal["worker", "operator", "viewer"] = "worker"
    credentials_dir: Path | None = None
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds: Path | None = None
    nats_nkey_seed: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = 5.0
    reconnect_wait: float = 0.5

    data_dir: Path = Field(default_factory=default_data_dir)

    # Streams. Sizes in bytes, ages in seconds; -1 means unlimited.
    tasks_max_age: float = 7 * 24 * 3600
    tasks_max_bytes: int = -1
    events_max_age: float = 7 * 24 * 3600
    events_max_bytes: int = 1024**3
    events_max_msg_size: int = 1024**2  # capped further at events_max_bytes / 16
    duplicate_window: float = 120.0
    replicas: int = 1
    results_ttl: float = 3600.0
    inputs_ttl: float = 7 * 24 * 3600
    artefacts_ttl: float = 7 * 24 * 3600
    # How long a listener remembers an event it handled: longer than a redelivery can
    # take (ack_wait x max_deliver), short because every handled event leaves a mark.
    marks_ttl: float = 300.0

    # Consumers and delivery.
    ack_wait: float = 30.0
    max_deliver: int = 5
    retry_delay: float = 1.0
    fetch_timeout: float = 5.0
    fetch_batch: int = 10
    concurrency: int = 10
    workflow_concurrency: int = 4
    listener_concurrency: int = 4
    tasks_durable: str = "workers"
    workflows_durable: str = "workflows"

    # PSD work: file limits (ONEMANAGE_PSD__MAX_DEPTH=...), upload cap, step timeout.
    psd: Limits = Field(default_factory=Limits)
    max_upload_bytes: int = 2 * 1024**3
    step_timeout: float = 600.0

    # Observability. lifecycle_events=False publishes no task transitions (queued,
    # started, succeeded, failed): the console, trace and the statistics then see no
    # tasks, only heartbeats and what your own code publishes. For raw throughput.
    lifecycle_events: bool = True
    heartbeat_interval: float = 5.0
    publish_timeout: float = 2.0  # one attempt's wait for the stream's acknowledgement
    # How long a publish keeps retrying "not stored yet" (timeouts, no responders,
    # elections, recovery) before its error says the outcome is unknown.
    publish_deadline: float = 30.0

    @field_validator("nats_url", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @property
    def embedded(self) -> bool:
        """True when no server is configured and the embedded one is used."""
        return not self.nats_url


def load_settings() -> Settings:
    """Read settings from the environment now (not at import time)."""
    return Settings()
