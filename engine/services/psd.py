"""Pure PSD logic: bytes in, typed values out (psd-tools + Pillow; no taskiq, no NATS, no files).

Every failure is a ``PsdError`` with a stable code. What needs no pixels (the header, the
section lengths, the layer records and the limits on them) is checked in the caller's
process, before psd-tools allocates anything. Decoding and rendering run in a child process
(see ``sandbox``) under ``Limits.render_memory_bytes`` and ``Limits.render_timeout_s``, so a
hostile file costs that child at most.
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import psd_tools.composite  # noqa: F401  (preloaded, so render children do not import it)
from PIL import Image
from psd_tools import PSDImage
from psd_tools.api.utils import PSDLargeImageWarning
from psd_tools.compression import DecompressionLimitError, PSDDecompressionWarning
from psd_tools.constants import ChannelID, ColorMode, Compression, Tag
from psd_tools.psd.layer_and_mask import LayerRecord
from psd_tools.psd.parse_limits import ParseLimitError, ParseLimits
from pydantic import BaseModel, Field

from engine.services import sandbox
from engine.services.limits import Limits

Image.preinit()  # PIL's PNG plugin, loaded once here rather than in every render child

PsdErrorCode = Literal[
    "not_psd",  # not a PSD/PSB at all (empty, text, PNG renamed...)
    "truncated",  # the file ends before its sections do
    "corrupt",  # sections present but inconsistent / unreadable
    "too_large",  # canvas or a layer above the pixel limits
    "too_deep",  # group nesting above the depth limit
    "too_many_layers",
    "decompression_limit",  # pixel data would inflate past the decompression budget
    "unsupported",  # a valid file this service cannot handle (mode, depth...)
    "render_failed",
    "render_timeout",
    "render_memory",
]


class PsdError(Exception):
    """Every failure of this module: a stable ``code`` and a message for a person."""

    def __init__(self, code: PsdErrorCode, message: str) -> None:
        # args = (code, message): taskiq rebuilds a remote error as cls(*args),
        # and pickling (the render sandbox) does the same.
        super().__init__(code, message)
        self.code: PsdErrorCode = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DocumentInfo(BaseModel):
    width: int
    height: int
    color_mode: str  # "RGB", "CMYK", "GRAYSCALE", ...
    depth: int  # bits per channel: 1, 8, 16, 32
    channels: int
    format: Literal["psd", "psb"]
    layer_count: int
    has_composite: bool


class BBox(BaseModel):
    left: int
    top: int
    right: int
    bottom: int


class TextRun(BaseModel):
    text: str
    font: str | None = None
    size: float | None = None


class LayerNode(BaseModel):
    id: int  # the layer id stored in the file (unique within a document)
    name: str
    kind: (
        str  # "group", "pixel", "type", "smartobject", "shape", "solidcolorfill", "adjustment", ...
    )
    visible: bool  # its own flag
    effective_visible: bool  # it and all its ancestors visible
    opacity: int  # 0..255
    blend_mode: str  # "normal", "multiply", ...
    bbox: BBox
    parent_id: int | None
    children: list[int] = Field(default_factory=list)
    depth: int  # 0 for top-level layers
    has_pixels: bool
    text: str | None = None
    text_runs: list[TextRun] = Field(default_factory=list)
    smart_object: Literal["embedded", "linked", "external"] | None = None
    smart_object_filename: str | None = None


class LayerTree(BaseModel):
    document: DocumentInfo
    layers: list[LayerNode]  # depth-first, in document order (bottom to top)


class Preview(BaseModel):
    width: int
    height: int
    png: bytes
    thumbnail_png: bytes
    source: Literal["composite", "rendered"]


class LayerImage(BaseModel):
    layer_id: int
    name: str
    filename: str  # e.g. "003-background.png", unique within a document
    left: int
    top: int
    width: int
    height: int
    png: bytes


def inspect(data: bytes, limits: Limits | None = None) -> DocumentInfo:
    """Header facts, refusing what the limits forbid before any pixel is decoded."""
    with _guard("corrupt", out_of_memory="too_large"):
        return _document_info(_load(data, limits or Limits()))


def parse(data: bytes, limits: Limits | None = None) -> LayerTree:
    """The whole layer tree, without decoding pixels.

    Node ids are the ids stored in the file; a layer without one, or repeating one, gets a
    fresh id above the largest stored. A group's bbox is the union of its descendants',
    hidden ones included, so that a hidden group still shows where it is.
    """
    with _guard("corrupt", out_of_memory="too_large"):
        document = _load(data, limits or Limits())
        return LayerTree(document=_document_info(document), layers=_nodes(document.entries))


def render_preview(data: bytes, limits: Limits | None = None, thumbnail_size: int = 256) -> Preview:
    """The document as an 8-bit RGB(A) PNG, and a thumbnail whose longest side is thumbnail_size.

    The stored composite is used when the file has one (it is what Photoshop showed);
    otherwise the layers are rendered, which can need scipy for some effects and fills.
    """
    if thumbnail_size < 1:
        raise ValueError(f"thumbnail_size must be positive, not {thumbnail_size}")
    limits = limits or Limits()
    header = _check_file(data, limits)
    if max(header.width, header.height) > _MAX_RENDER_SIDE:
        raise PsdError(
            "unsupported",
            f"psd-tools renders at most {_MAX_RENDER_SIDE} pixels a side, "
            f"this document is {header.width}x{header.height}",
        )
    return _sandboxed(
        partial(_render_job, limits=limits, thumbnail_size=thumbnail_size), data, limits
    )


def export_layers(data: bytes, limits: Limits | None = None) -> list[LayerImage]:
    """One 8-bit RGB(A) PNG per effectively visible layer that has pixels, in document order.

    Each image is the layer's own pixels, as stored: before its mask, opacity, blend mode
    and effects, placed at (left, top) on the canvas. Groups, empty layers and layers in
    hidden groups have none. Filenames are the layer's index in ``parse`` and a slug.
    """
    limits = limits or Limits()
    _check_file(data, limits)
    return _sandboxed(partial(_export_job, limits=limits), data, limits)


# -- errors ---------------------------------------------------------------------------


@contextmanager
def _guard(failure: PsdErrorCode, out_of_memory: PsdErrorCode | None = None) -> Iterator[None]:
    """Turn whatever psd-tools, Pillow, numpy or zlib raise into a PsdError.

    ``failure`` is the code for the unexpected; a MemoryError becomes ``out_of_memory``, or
    is left to the caller (in a render child, the sandbox reports it).
    """
    try:
        yield
    except PsdError:
        raise
    except MemoryError:
        if out_of_memory is None:
            raise
        raise PsdError(out_of_memory, "not enough memory to read this file") from None
    except RecursionError:
        raise PsdError("too_deep", "structures are nested too deeply to read") from None
    except DecompressionLimitError as exc:
        raise PsdError("decompression_limit", str(exc)) from None
    except ParseLimitError as exc:
        raise PsdError("too_large", f"too many structures to parse ({exc})") from None
    except PSDDecompressionWarning as exc:
        cause = str(exc).split(";")[0]  # the rest says it would be replaced with black
        raise PsdError("corrupt", f"pixel data cannot be decoded: {cause}") from None
    except ImportError as exc:
        cause = str(exc).splitlines()[0]
        message = f"rendering this file needs an optional library: {cause} (pip install scipy)"
        raise PsdError("render_failed", message) from None
    except Exception as exc:
        raise PsdError(failure, f"{type(exc).__name__}: {exc}") from None


# -- checks on the bytes, before psd-tools ------------------------------------------------


_SIGNATURE = b"8BPS"
_HEADER = struct.Struct(">4sH6xHIIHH")  # signature, version, channels, height, width, depth, mode
_MAX_SIDE = 300_000  # the PSB format's limit
_MAX_RENDER_SIDE = 30_000  # psd-tools' render limit, PSB included
_COLOR_MODES = frozenset(ColorMode)


@dataclass(frozen=True)
class _Header:
    version: int
    channels: int
    height: int
    width: int
    depth: int
    mode: int

    @property
    def row_bytes(self) -> int:
        return (self.width * self.depth + 7) // 8


def _check_file(data: bytes, limits: Limits) -> _Header:
    """Refuse what is not a PSD, too big, or cut short, from the bytes alone."""
    if len(data) > limits.max_file_bytes:
        raise PsdError("too_large", f"the file is {len(data)} bytes, over {limits.max_file_bytes}")
    header = _read_header(data)
    pixels = header.width * header.height
    if pixels > limits.max_canvas_pixels:
        raise PsdError(
            "too_large",
            f"the canvas is {header.width}x{header.height} ({pixels} pixels), "
            f"over {limits.max_canvas_pixels}",
        )
    _check_sections(data, header)
    return header


def _read_header(data: bytes) -> _Header:
    if not data.startswith(_SIGNATURE):
        found = "an empty file" if not data else f"it starts with {bytes(data[:8])!r}"
        raise PsdError("not_psd", f"not a PSD or PSB file: {found}")
    if len(data) < _HEADER.size:
        raise PsdError("truncated", f"the file ends inside its {_HEADER.size}-byte header")
    _, version, channels, height, width, depth, mode = _HEADER.unpack_from(data)
    header = _Header(version, channels, height, width, depth, mode)
    problem = _header_problem(header)
    if problem:
        raise PsdError("corrupt", f"invalid header: {problem}")
    return header


def _header_problem(header: _Header) -> str | None:
    if header.version not in (1, 2):
        return f"version {header.version} (1 is PSD, 2 is PSB)"
    if not 1 <= header.channels <= 56:
        return f"{header.channels} channels"
    if not (1 <= header.width <= _MAX_SIDE and 1 <= header.height <= _MAX_SIDE):
        return f"size {header.width}x{header.height}"
    if header.depth not in (1, 8, 16, 32):
        return f"{header.depth} bits per channel"
    if header.mode not in _COLOR_MODES:
        return f"colour mode {header.mode}"
    return None


def _check_sections(data: bytes, header: _Header) -> None:
    """Each section's length must fit in the file; the stored composite must be complete."""
    offset = _HEADER.size
    sections = (
        ("colour mode data", 4),
        ("image resources", 4),
        ("layer and mask information", 4 if header.version == 1 else 8),
    )
    for name, length_size in sections:
        if offset + length_size > len(data):
            raise PsdError("truncated", f"the file ends before the {name} section")
        length = int.from_bytes(data[offset : offset + length_size], "big")
        offset += length_size + length
        if offset > len(data):
            raise PsdError(
                "truncated",
                f"the file ends inside the {name} section ({len(data)} of {offset} bytes)",
            )
    _check_image_data(data, offset, header)


def _check_image_data(data: bytes, offset: int, header: _Header) -> None:
    """The composite's bytes against what its size needs (ZIP can only tell when inflated).

    psd-tools reads a composite cut short without complaint, then shows garbage.
    """
    if offset + 2 > len(data):
        raise PsdError("truncated", "the file ends before the image data section")
    compression = int.from_bytes(data[offset : offset + 2], "big")
    body = memoryview(data)[offset + 2 :]
    rows = header.channels * header.height
    if compression == Compression.RAW:
        needed = rows * header.row_bytes
    elif compression == Compression.RLE:
        counts_size = rows * (2 if header.version == 1 else 4)
        if len(body) < counts_size:
            raise PsdError("truncated", "the file ends inside the image data's row table")
        counts = np.frombuffer(body[:counts_size], dtype=">u2" if header.version == 1 else ">u4")
        needed = counts_size + int(counts.sum(dtype=np.uint64))
    elif compression in (Compression.ZIP, Compression.ZIP_WITH_PREDICTION):
        return
    else:
        raise PsdError("corrupt", f"the image data has unknown compression {compression}")
    if len(body) < needed:
        raise PsdError(
            "truncated",
            f"the file ends inside the image data ({len(body)} of {needed} bytes)",
        )


# -- reading with psd-tools, and the limits on the records ---------------------------------


@dataclass(frozen=True)
class _Entry:
    """A layer of the tree, flattened: its parent's index in the list, and its depth."""

    layer: Any  # a psd_tools Layer
    parent: int | None
    depth: int


@dataclass(frozen=True)
class _Document:
    psd: PSDImage
    entries: list[_Entry]


def _load(data: bytes, limits: Limits) -> _Document:
    """Check the bytes, read the structure (no pixels), and enforce every record limit."""
    header = _check_file(data, limits)
    with _guard("corrupt"):
        psd = PSDImage.open(io.BytesIO(data), parse_limits=_parse_limits(limits))
    entries = _walk(psd, limits)
    _check_pixel_data(psd, header, limits)
    return _Document(psd, entries)


def _parse_limits(limits: Limits) -> ParseLimits:
    """psd-tools' structural limits, without its nesting limit.

    Its nesting limit fails the whole file when one text engine block is too deep, whereas
    left to Python's recursion limit psd-tools drops just that block, and the layer keeps
    its text without runs. A descriptor nested that deep still fails: as ``too_deep``.
    """
    return ParseLimits(max_nesting_depth=None, max_objects=limits.max_parsed_objects)


def _walk(psd: PSDImage, limits: Limits) -> list[_Entry]:
    """Depth-first, bottom to top, without recursion (psd-tools recurses ~100 levels deep)."""
    entries: list[_Entry] = []
    stack: list[tuple[Any, int | None, int]] = [(layer, None, 0) for layer in reversed(psd)]
    while stack:
        layer, parent, depth = stack.pop()
        if depth > limits.max_depth:
            raise PsdError(
                "too_deep", f"layers are nested more than {limits.max_depth} groups deep"
            )
        if len(entries) == limits.max_layers:
            raise PsdError("too_many_layers", f"more than {limits.max_layers} layers")
        entries.append(_Entry(layer, parent, depth))
        if layer.is_group():
            index = len(entries) - 1
            stack.extend((child, index, depth + 1) for child in reversed(layer))
    return entries


def _check_pixel_data(psd: PSDImage, header: _Header, limits: Limits) -> None:
    """Layer sizes, and the bytes all pixel data would inflate to, as the records declare."""
    declared = header.channels * header.height * header.row_bytes  # the composite
    for record in _layer_records(psd):
        width, height = _size(record.left, record.top, record.right, record.bottom)
        if width * height > limits.max_layer_pixels:
            raise PsdError(
                "too_large",
                f"layer {record.name!r} is {width}x{height} pixels, over {limits.max_layer_pixels}",
            )
        for channel in record.channel_info:
            width, height = _channel_size(record, channel.id)
            declared += height * ((width * header.depth + 7) // 8)
    if declared > limits.max_decompressed_bytes:
        raise PsdError(
            "decompression_limit",
            f"the pixel data would inflate to {declared} bytes, "
            f"over {limits.max_decompressed_bytes}",
        )


def _layer_records(psd: PSDImage) -> list[LayerRecord]:
    """The layer records where psd-tools reads them: 16- and 32-bit files use a tagged block."""
    information = psd._record.layer_and_mask_information
    blocks = information.tagged_blocks
    for key in (Tag.LAYER_16, Tag.LAYER_32):
        if blocks is not None and key in blocks:
            return list(blocks.get_data(key).layer_records)
    return list(information.layer_info.layer_records) if information.layer_info else []


def _channel_size(record: LayerRecord, channel_id: int) -> tuple[int, int]:
    """A channel's width and height: a mask channel has its own rectangle."""
    mask = record.mask_data
    if mask is not None and channel_id == ChannelID.USER_LAYER_MASK:
        return _size(mask.left, mask.top, mask.right, mask.bottom)
    if mask is not None and channel_id == ChannelID.REAL_USER_LAYER_MASK:
        real = (mask.real_left, mask.real_top, mask.real_right, mask.real_bottom)
        return _size(*(side or 0 for side in real))
    return _size(record.left, record.top, record.right, record.bottom)


def _size(left: int, top: int, right: int, bottom: int) -> tuple[int, int]:
    return max(0, right - left), max(0, bottom - top)


def _has_composite(psd: PSDImage) -> bool:
    return bool(psd.has_preview()) and len(psd._record.image_data.data) > 0


def _document_info(document: _Document) -> DocumentInfo:
    psd = document.psd
    return DocumentInfo(
        width=psd.width,
        height=psd.height,
        color_mode=ColorMode(psd.color_mode).name,
        depth=psd.depth,
        channels=psd.channels,
        format="psb" if psd.version == 2 else "psd",
        layer_count=len(document.entries),
        has_composite=_has_composite(psd),
    )


# -- the tree -------------------------------------------------------------------------

# psd-tools' smart object kinds: liFD data is in the file, liFE names a file, liFA an alias.
_SMART_OBJECT_KINDS: dict[str, Literal["embedded", "linked", "external"]] = {
    "data": "embedded",
    "external": "external",
    "alias": "linked",
}


def _nodes(entries: list[_Entry]) -> list[LayerNode]:
    ids = _ids(entries)
    boxes = _boxes(entries)
    effective: list[bool] = []
    nodes: list[LayerNode] = []
    for index, entry in enumerate(entries):
        layer = entry.layer
        parent_id = None if entry.parent is None else ids[entry.parent]
        visible = bool(layer.visible)
        effective.append(visible and (entry.parent is None or effective[entry.parent]))
        if entry.parent is not None:
            nodes[entry.parent].children.append(ids[index])
        text, runs = _text(layer) if layer.kind == "type" else (None, [])
        smart_object, filename = (
            _smart_object(layer) if layer.kind == "smartobject" else (None, None)
        )
        left, top, right, bottom = boxes[index]
        nodes.append(
            LayerNode(
                id=ids[index],
                name=layer.name,
                kind=layer.kind,
                visible=visible,
                effective_visible=effective[index],
                opacity=layer.opacity,
                blend_mode=layer.blend_mode.name.lower(),
                bbox=BBox(left=left, top=top, right=right, bottom=bottom),
                parent_id=parent_id,
                depth=entry.depth,
                has_pixels=layer.has_pixels(),
                text=text,
                text_runs=runs,
                smart_object=smart_object,
                smart_object_filename=filename,
            )
        )
    return nodes


def _ids(entries: list[_Entry]) -> list[int]:
    """The stored layer ids, with fresh ones where a layer has none or repeats one."""
    stored = [int(entry.layer.layer_id) for entry in entries]
    fresh = max(stored, default=0) + 1
    seen: set[int] = set()
    ids: list[int] = []
    for layer_id in stored:
        if layer_id < 0 or layer_id in seen:
            layer_id, fresh = fresh, fresh + 1
        seen.add(layer_id)
        ids.append(layer_id)
    return ids


_Box = tuple[int, int, int, int]
_EMPTY: _Box = (0, 0, 0, 0)


def _boxes(entries: list[_Entry]) -> list[_Box]:
    """Each layer's box; a group's is the union of its children's, gathered bottom-up."""
    boxes = [_EMPTY if _is_plain_group(entry) else tuple(entry.layer.bbox) for entry in entries]
    for index in reversed(range(len(entries))):  # children come after their parent
        parent = entries[index].parent
        if parent is not None and _is_plain_group(entries[parent]):
            boxes[parent] = _union(boxes[parent], boxes[index])
    return boxes


def _is_plain_group(entry: _Entry) -> bool:
    kind: str = entry.layer.kind
    return kind == "group"  # an artboard has a box of its own


def _union(a: _Box, b: _Box) -> _Box:
    if b[2] <= b[0] or b[3] <= b[1]:
        return a
    if a == _EMPTY:
        return b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _text(layer: Any) -> tuple[str | None, list[TextRun]]:
    """The text and its styled runs.

    A template's type layers are what it is for: when their engine data (fonts,
    sizes, runs) cannot be read, the file is refused as corrupt rather than
    passed on with its styling silently gone.
    """
    unreadable = PsdError(
        "corrupt", f"type layer {layer.name!r}: its text engine data cannot be read"
    )
    try:
        text = str(layer.text)
        if not layer.engine_dict:  # psd-tools logs and gives up on broken engine data
            raise unreadable
        runs = [
            TextRun(text=run.text, font=run.style.font_name or None, size=run.style.font_size)
            for run in layer.typesetting.runs
        ]
    except PsdError:
        raise
    except Exception as exc:
        raise unreadable from exc
    return text, runs


def _smart_object(
    layer: Any,
) -> tuple[Literal["embedded", "linked", "external"] | None, str | None]:
    """Where the smart object's data lives and its file name; linked files are never opened."""
    try:
        smart_object = layer.smart_object
        return _SMART_OBJECT_KINDS.get(smart_object.kind), smart_object.filename or None
    except ValueError:  # a placed layer whose link data the document lacks
        return None, None


# -- in the render child ---------------------------------------------------------------

T = TypeVar("T")


def _sandboxed(job: Callable[[bytes], T], data: bytes, limits: Limits) -> T:
    """Run a render job in a child under the limits, mapping its death to a PsdError."""
    try:
        return sandbox.run(
            job,
            data,
            memory_bytes=limits.render_memory_bytes,
            timeout_s=limits.render_timeout_s,
        )
    except sandbox.SandboxTimeout:
        message = f"rendering took longer than {limits.render_timeout_s:g} s"
        raise PsdError("render_timeout", message) from None
    except sandbox.SandboxMemory as exc:
        message = f"rendering needs more than {limits.render_memory_bytes} bytes ({exc})"
        raise PsdError("render_memory", message) from None
    except (sandbox.SandboxError, OSError) as exc:
        raise PsdError("render_failed", f"the render process failed: {exc}") from None


@contextmanager
def _decoding() -> Iterator[None]:
    """Errors as PsdErrors, and a channel that fails to decode an error, not black pixels."""
    with _guard("render_failed"), warnings.catch_warnings():
        warnings.simplefilter("error", PSDDecompressionWarning)
        warnings.simplefilter("ignore", PSDLargeImageWarning)
        yield


def _open_for_rendering(data: bytes, limits: Limits) -> _Document:
    document = _load(data, limits)
    document.psd.max_alloc_bytes = "unlimited"  # the child's address-space limit rules
    return document


def _render_job(data: bytes, limits: Limits, thumbnail_size: int) -> Preview:
    with _decoding():
        psd = _open_for_rendering(data, limits).psd
        stored = _has_composite(psd)
        image = _to_rgb8(psd.composite(ignore_preview=not stored))
        return Preview(
            width=image.width,
            height=image.height,
            png=_png(image),
            thumbnail_png=_png(_thumbnail(image, thumbnail_size)),
            source="composite" if stored else "rendered",
        )


def _export_job(data: bytes, limits: Limits) -> list[LayerImage]:
    with _decoding():
        entries = _open_for_rendering(data, limits).entries
        digits = max(3, len(str(len(entries) - 1)))
        images: list[LayerImage] = []
        for index, (entry, node) in enumerate(zip(entries, _nodes(entries), strict=True)):
            if not node.effective_visible or entry.layer.is_group() or not node.has_pixels:
                continue
            image = _layer_image(entry.layer)
            if image is None:
                continue
            images.append(
                LayerImage(
                    layer_id=node.id,
                    name=node.name,
                    filename=f"{index:0{digits}d}-{_slug(node.name)}.png",
                    left=entry.layer.left,
                    top=entry.layer.top,
                    width=image.width,
                    height=image.height,
                    png=_png(image),
                )
            )
        return images


def _layer_image(layer: Any) -> Image.Image | None:
    """The layer's pixels in RGB(A); PIL has no CMYK with alpha, so that alpha is put back."""
    image = layer.topil()
    if image is None:
        return None
    rgb = _to_rgb8(image)
    if rgb.mode == "RGB":
        alpha = layer.topil(channel=ChannelID.TRANSPARENCY_MASK)
        if alpha is not None:
            rgb.putalpha(alpha)
    return rgb


def _to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA when there is transparency: what every PNG viewer shows right.

    psd-tools already gives 8 bits per channel for 16- and 32-bit files, and sRGB when the
    file has an ICC profile; CMYK without one takes PIL's plain conversion.
    """
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    if scale >= 1:
        return image.resize((width, height), Image.Resampling.NEAREST)
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


_PNG_LEVEL = 3  # about as small as the default 6, and several times faster on big canvases


def _slug(name: str) -> str:
    """Lowercase ASCII letters, digits and hyphens, for a file name; "layer" if none remain."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:60].rstrip("-") or "layer"
