"""Layered PSD/PSB files generated in memory with psd-tools: the demo file, and test inputs.

``make_demo_psd`` is what a new user can submit to see the whole pipeline work; ``make_psd``
builds any tree of solid-colour pixel layers and groups, in any colour mode and depth psd-tools
can write, so that tests and benchmarks need no files from disk.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from psd_tools import PSDImage
from psd_tools.constants import BlendMode, Compression, Resource

Box = tuple[int, int, int, int]  # left, top, right, bottom on the canvas


@dataclass(frozen=True)
class Fill:
    """A pixel layer: a rectangle of one colour, given in the document's mode (RGB, CMYK, L)."""

    name: str
    color: tuple[int, ...]
    box: Box
    opacity: int = 255
    blend_mode: str = "normal"
    visible: bool = True


@dataclass(frozen=True)
class Group:
    """A group of layers, listed bottom to top like Photoshop's file order."""

    name: str
    layers: tuple[Fill | Group, ...]
    opacity: int = 255
    blend_mode: str = "pass_through"
    visible: bool = True


# The demo's layers, with the colour each should show where it is alone on white.
DEMO_SIZE = (800, 600)
DEMO_LAYERS: tuple[Fill | Group, ...] = (
    Fill("Background", (255, 255, 255), (0, 0, 800, 600)),
    Group("Sky", (Fill("Sun", (255, 200, 0), (600, 40, 720, 160)),)),
    Group(
        "Town",
        (
            Group(
                "House",
                (
                    Fill("Wall", (255, 0, 0), (100, 300, 300, 500)),
                    Fill("Window", (0, 0, 255), (150, 350, 200, 400), blend_mode="multiply"),
                    Fill("Light", (0, 128, 0), (220, 350, 280, 400), blend_mode="screen"),
                ),
                blend_mode="normal",
            ),
            Fill("Shadow", (0, 0, 0), (320, 450, 480, 500), opacity=128),
        ),
        blend_mode="normal",  # isolated groups render twice as fast as pass-through ones
    ),
    Fill("Draft", (255, 0, 255), (400, 100, 500, 200), visible=False),
    Group("Notes", (Fill("Note", (0, 255, 0), (550, 300, 700, 400)),), visible=False),
)


def make_demo_psd(psb: bool = False, seed: int = 0) -> bytes:
    """An 800x600 RGB document: nested groups, hidden layers, opacity and blend modes.

    It has a hidden layer, a visible layer inside a hidden group, a layer at half opacity,
    multiply and screen layers, and a group nested in a group. A nonzero ``seed`` moves and
    recolours the sun within the sky: another file, the same tree.
    """
    return make_psd(_demo_layers(seed), DEMO_SIZE, psb=psb)


def _demo_layers(seed: int) -> tuple[Fill | Group, ...]:
    if seed == 0:
        return DEMO_LAYERS
    rng = random.Random(seed)
    left, top = rng.randrange(520, 680), rng.randrange(0, 120)
    sun = Fill(
        "Sun",
        (255, rng.randrange(150, 256), rng.randrange(100)),
        (left, top, left + 120, top + 120),
    )
    background, _, *rest = DEMO_LAYERS
    return (background, Group("Sky", (sun,)), *rest)


def make_psd(
    layers: Sequence[Fill | Group],
    size: tuple[int, int],
    mode: str = "RGB",
    depth: Literal[8, 16, 32] = 8,
    psb: bool = False,
    *,
    composite: bool = True,
    compression: Compression = Compression.RLE,
) -> bytes:
    """A document of ``layers`` (bottom to top), saved as PSD, or PSB when ``psb``.

    ``mode`` is a PIL mode psd-tools writes ("RGB", "CMYK", "L"), ``depth`` 8, 16 or 32.
    With ``composite=False`` the file says it stores no composite (its image data is blank),
    as Photoshop does with "maximize compatibility" off, so that readers must render layers.
    """
    document = PSDImage.new(mode, size, depth=depth, compression=compression)
    if psb:  # before any layer: PSB channels have wider row counts
        document._record.header.version = 2  # psd-tools picks PSB only above 30000 px
    _add(document, layers, mode, compression)
    document.image_resources.get_data(Resource.VERSION_INFO).has_composite = composite
    if not composite:
        # Nothing to render on save: the blank image data stays, as the file says it holds
        # no composite. This also keeps big or deeply nested test inputs fast to write.
        document._updated = False
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _add(parent: Any, layers: Sequence[Fill | Group], mode: str, compression: Compression) -> None:
    """Create ``layers`` in ``parent`` (a document or a group), bottom first."""
    for spec in layers:
        blend_mode = BlendMode[spec.blend_mode.upper()]
        if isinstance(spec, Group):
            layer = parent.create_group(name=spec.name, opacity=spec.opacity, blend_mode=blend_mode)
            _add(layer, spec.layers, mode, compression)
        else:
            left, top, right, bottom = spec.box
            layer = parent.create_pixel_layer(
                _solid(mode, (right - left, bottom - top), spec.color),
                name=spec.name,
                left=left,
                top=top,
                compression=compression,
                opacity=spec.opacity,
                blend_mode=blend_mode,
            )
        layer.visible = spec.visible


def _solid(mode: str, size: tuple[int, int], color: tuple[int, ...]) -> Image.Image:
    """A solid image; RGB and grey get an opaque alpha channel so their layers have one."""
    with_alpha = {"RGB": "RGBA", "L": "LA"}.get(mode)
    if with_alpha:
        return Image.new(with_alpha, size, (*color, 255))
    return Image.new(mode, size, color)
