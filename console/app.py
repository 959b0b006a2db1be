"""onemanage-console: the live Textual console (being built; see the console issue)."""

from __future__ import annotations

import sys


def main() -> int:
    print("onemanage-console is not built yet; `onemanage status` shows the system meanwhile.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
