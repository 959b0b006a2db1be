"""The limits a PSD must stay within, apart from the PSD code itself.

Settings carry these (``ONEMANAGE_PSD__*``), and every process reads settings:
keeping them here lets a client that only kicks tasks do so without loading
psd-tools, SciPy and Pillow.
"""

from __future__ import annotations

from pydantic import BaseModel


class Limits(BaseModel):
    """Guards against hostile or oversized files; every one configurable."""

    max_file_bytes: int = 2 * 1024**3
    max_canvas_pixels: int = 100_000_000  # 10k x 10k
    max_layer_pixels: int = 100_000_000
    max_depth: int = 32
    max_layers: int = 2000
    max_decompressed_bytes: int = 2 * 1024**3
    render_timeout_s: float = 120.0
    render_memory_bytes: int = 3 * 1024**3
    # Structures psd-tools may parse (records, descriptor items, text engine tokens): real
    # files measure ~850 per layer, and psd-tools' own default of 1M would refuse big ones.
    max_parsed_objects: int = 4_000_000
