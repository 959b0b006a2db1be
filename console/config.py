"""The console's config file: key remapping by binding id.

```toml
# ~/.config/onemanage/console.toml
[keys]
submit = "ctrl+s"
quit = "ctrl+q,q"
```
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onemanage" / "console.toml"


@dataclass
class ConsoleConfig:
    keys: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load(path: Path | None, known_ids: set[str]) -> ConsoleConfig:
    """Read ``path`` (or the default); problems are reported, never fatal."""
    path = path or default_path()
    config = ConsoleConfig()
    if not path.exists():
        return config
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        config.problems.append(f"{path}: {exc}")
        return config
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        config.problems.append(f'{path}: [keys] must be a table of binding id = "key"')
        return config
    for binding_id, key in keys.items():
        if binding_id not in known_ids:
            config.problems.append(f"{path}: unknown binding id {binding_id!r}")
        elif not isinstance(key, str) or not key.strip():
            config.problems.append(f"{path}: key for {binding_id!r} must be a non-empty string")
        else:
            config.keys[binding_id] = key.strip()
    return config
