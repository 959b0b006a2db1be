"""Broken, hostile and extreme PSD inputs for the PSD service's tests, generated in memory.

Valid documents come from ``engine.services.samples``; this module cuts, patches and
stretches them. Offsets follow the file format: a 26-byte header, then colour mode data,
image resources and layer-and-mask information (each behind its own length), then the
image data (a 2-byte compression code and the composite).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from psd_tools import PSDImage
from psd_tools.constants import Compression, Tag
from psd_tools.psd.descriptor import DescriptorBlock, RawData, String
from psd_tools.psd.tagged_blocks import TaggedBlock, TypeToolObjectSetting

from engine.services.samples import Fill, Group, make_psd

HEADER = struct.Struct(">4sH6xHIIHH")


@dataclass(frozen=True)
class Sections:
    """Where each section of a document starts (the offset of its length field)."""

    color_mode: int
    resources: int
    layers: int
    image_data: int  # the compression code
    image_rows: int  # the composite's first byte (its RLE row table, when RLE)


def sections(data: bytes) -> Sections:
    version = struct.unpack_from(">H", data, 4)[0]
    offsets = []
    offset = HEADER.size
    for length_size in (4, 4, 4 if version == 1 else 8):
        offsets.append(offset)
        offset += length_size + int.from_bytes(data[offset : offset + length_size], "big")
    return Sections(*offsets, image_data=offset, image_rows=offset + 2)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def with_header(data: bytes, **fields: int) -> bytes:
    """The document with header fields replaced: version, channels, height, width, depth, mode."""
    signature, *values = HEADER.unpack_from(data)
    names = ("version", "channels", "height", "width", "depth", "mode")
    current = dict(zip(names, values, strict=True))
    current.update(fields)
    return HEADER.pack(signature, *(current[name] for name in names)) + data[HEADER.size :]


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def with_layer_info_overrun(data: bytes) -> bytes:
    """The layer info block claims more bytes than its enclosing section holds."""
    layers = sections(data).layers
    return patched(data, layers + 4, struct.pack(">I", 0x7FFF_0000))


def with_broken_layer_pixels(data: bytes) -> bytes:
    """The first layer's first channel replaced by an RLE body too short for its rows."""
    psd = PSDImage.open(io.BytesIO(data))
    channel = psd._record.layer_and_mask_information.layer_info.channel_image_data[0][0]
    channel.compression = Compression.RLE
    channel.data = b"\x00\x05\xfe"
    buffer = io.BytesIO()
    psd._record.write(buffer)  # the low-level writer: nothing re-rendered or re-encoded
    return buffer.getvalue()


def with_text(
    data: bytes, text: str, runs: Sequence[tuple[int, str, float]], engine: bytes | None = None
) -> bytes:
    """The first layer made a type layer: ``text`` in runs of (length, font, size).

    psd-tools cannot author text, so its type tool block is built here. ``engine`` replaces
    the generated text engine data, to break it.
    """
    descriptor = DescriptorBlock()
    descriptor[b"Txt "] = String(text)
    descriptor[b"EngineData"] = RawData(value=engine_data(runs) if engine is None else engine)
    setting = TypeToolObjectSetting(
        version=1,
        transform=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0),
        text_version=50,
        text_data=descriptor,
        warp_version=1,
        warp=DescriptorBlock(),
    )
    psd = PSDImage.open(io.BytesIO(data))
    record = psd._record.layer_and_mask_information.layer_info.layer_records[0]
    record.tagged_blocks[Tag.TYPE_TOOL_OBJECT_SETTING] = TaggedBlock(
        key=Tag.TYPE_TOOL_OBJECT_SETTING, data=setting
    )
    buffer = io.BytesIO()
    psd._record.write(buffer)
    return buffer.getvalue()


def engine_data(runs: Sequence[tuple[int, str, float]]) -> bytes:
    """Photoshop's text engine data (a PostScript-like dict) for runs of (length, font, size)."""
    fonts = list(dict.fromkeys(font for _, font, _ in runs))
    styles = b" ".join(
        b"<< /StyleSheet << /StyleSheetData << /Font %d /FontSize %r >> >> >>"
        % (fonts.index(font), size)
        for _, font, size in runs
    )
    lengths = b" ".join(b"%d" % length for length, _, _ in runs)
    names = b" ".join(b"<< /Name (\xfe\xff" + font.encode("utf-16-be") + b") >>" for font in fonts)
    return (
        b"\n\n<< /EngineDict << /StyleRun << /RunArray [ "
        + styles
        + b" ] /RunLengthArray [ "
        + lengths
        + b" ] >> >> /ResourceDict << /FontSet [ "
        + names
        + b" ] >> >>"
    )


BROKEN_ENGINE_DATA = {
    "deep-dicts": b"<< /A " * 3000,
    "deep-lists": b"[ " * 3000,
    "unterminated-string": b"<< /T (\xfe\xff" + b"\x00a" * 2000,
}


def nested(levels: int, composite: bool = False) -> bytes:
    """A red 8x8 layer inside ``levels`` nested groups."""
    spec: Fill | Group = Fill("leaf", (255, 0, 0), (0, 0, 8, 8))
    for level in reversed(range(levels)):
        spec = Group(f"group {level}", (spec,))
    return make_psd([spec], (16, 16), composite=composite)


def big_blank_layer(side: int) -> bytes:
    """A side x side black layer, ZIP-compressed to almost nothing, on a 64x64 canvas."""
    layer = Fill("blank", (0, 0, 0), (0, 0, side, side))
    return make_psd([layer], (64, 64), composite=False, compression=Compression.ZIP)


def slow_to_render(side: int = 2000, layers: int = 6) -> bytes:
    """Full-canvas layers with blend modes and no stored composite: seconds to render."""
    modes = ("normal", "multiply", "screen", "overlay", "difference", "darken")
    fills = [
        Fill(f"layer {i}", (40 * i % 256, 90, 200), (0, 0, side, side), 200, modes[i % len(modes)])
        for i in range(layers)
    ]
    return make_psd(fills, (side, side), composite=False)
