"""The PSD service against real psd-tools, on documents generated in memory.

Good documents come from engine.services.samples, broken ones from tests.support.psd_factory.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from engine.services import psd
from engine.services.psd import Limits, PsdError
from engine.services.samples import DEMO_LAYERS, DEMO_SIZE, Fill, Group, make_demo_psd, make_psd
from tests.support import psd_factory as factory

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "inspect": psd.inspect,
    "parse": psd.parse,
    "render_preview": psd.render_preview,
    "export_layers": psd.export_layers,
}
ALL = pytest.mark.parametrize("function", FUNCTIONS.values(), ids=FUNCTIONS.keys())

# The demo document in document order: name, kind, own and effective visibility, opacity,
# blend mode, bbox, parent's index, depth.
DEMO_TREE = [
    ("Background", "pixel", True, True, 255, "normal", (0, 0, 800, 600), None, 0),
    ("Sky", "group", True, True, 255, "pass_through", (600, 40, 720, 160), None, 0),
    ("Sun", "pixel", True, True, 255, "normal", (600, 40, 720, 160), 1, 1),
    ("Town", "group", True, True, 255, "normal", (100, 300, 480, 500), None, 0),
    ("House", "group", True, True, 255, "normal", (100, 300, 300, 500), 3, 1),
    ("Wall", "pixel", True, True, 255, "normal", (100, 300, 300, 500), 4, 2),
    ("Window", "pixel", True, True, 255, "multiply", (150, 350, 200, 400), 4, 2),
    ("Light", "pixel", True, True, 255, "screen", (220, 350, 280, 400), 4, 2),
    ("Shadow", "pixel", True, True, 128, "normal", (320, 450, 480, 500), 3, 1),
    ("Draft", "pixel", False, False, 255, "normal", (400, 100, 500, 200), None, 0),
    ("Notes", "group", False, False, 255, "pass_through", (550, 300, 700, 400), None, 0),
    ("Note", "pixel", True, False, 255, "normal", (550, 300, 700, 400), 10, 1),
]

# Points of the demo and the colour each must show, computed from the layers over white.
DEMO_COLOURS = [
    ((10, 10), (255, 255, 255)),  # the background alone
    ((660, 100), (255, 200, 0)),  # the sun
    ((120, 320), (255, 0, 0)),  # the wall
    ((175, 375), (0, 0, 0)),  # blue multiplied over red
    ((250, 375), (255, 128, 0)),  # (0, 128, 0) screened over red
    ((400, 475), (127, 127, 127)),  # black at opacity 128 over white
    ((450, 150), (255, 255, 255)),  # the hidden Draft shows nothing
    ((600, 350), (255, 255, 255)),  # Note, visible itself, is in the hidden Notes group
]


@pytest.fixture(scope="module", params=["psd", "psb"])
def demo(request: pytest.FixtureRequest) -> bytes:
    return make_demo_psd(psb=request.param == "psb")


@pytest.fixture(scope="module")
def demo_psd() -> bytes:
    return make_demo_psd()


def image_of(png: bytes) -> Image.Image:
    """A PNG that must be 8 bits per channel, RGB or RGBA (checked in its IHDR chunk)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    bit_depth, colour_type = png[24], png[25]
    assert bit_depth == 8
    assert colour_type in (2, 6)  # truecolour, truecolour with alpha
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def assert_colour(image: Image.Image, xy: tuple[int, int], expected: tuple[int, ...]) -> None:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= 2 for a, b in zip(pixel[:3], expected, strict=True)), (xy, pixel)
    if image.mode == "RGBA":
        assert pixel[3] >= 250, (xy, pixel)


def error_of(function: Callable[..., Any], data: bytes, limits: Limits | None = None) -> PsdError:
    with pytest.raises(PsdError) as caught:
        function(data, limits)
    return caught.value


# -- good documents -------------------------------------------------------------------


def test_inspect_reads_the_header_facts(demo: bytes) -> None:
    info = psd.inspect(demo)
    assert (info.width, info.height) == DEMO_SIZE
    assert (info.color_mode, info.depth, info.channels) == ("RGB", 8, 3)
    assert info.format == ("psb" if demo[5] == 2 else "psd")
    assert info.layer_count == len(DEMO_TREE)
    assert info.has_composite


def test_demo_seeds_give_other_files_with_the_same_tree(demo_psd: bytes) -> None:
    seeded = make_demo_psd(seed=7)
    assert seeded != demo_psd
    shape = [(node.name, node.kind, node.depth) for node in psd.parse(demo_psd).layers]
    assert [(node.name, node.kind, node.depth) for node in psd.parse(seeded).layers] == shape


def test_a_file_without_a_stored_composite_says_so() -> None:
    data = make_psd([Fill("red", (255, 0, 0), (0, 0, 10, 10))], (20, 20), composite=False)
    assert not psd.inspect(data).has_composite


def test_parse_gives_the_tree_in_document_order(demo: bytes) -> None:
    tree = psd.parse(demo)
    assert tree.document == psd.inspect(demo)
    assert len(tree.layers) == len(DEMO_TREE)
    ids = [node.id for node in tree.layers]
    assert len(set(ids)) == len(ids)
    for node, expected in zip(tree.layers, DEMO_TREE, strict=True):
        name, kind, visible, effective, opacity, blend_mode, bbox, parent, depth = expected
        assert (node.name, node.kind) == (name, kind)
        assert (node.visible, node.effective_visible) == (visible, effective), name
        assert (node.opacity, node.blend_mode) == (opacity, blend_mode), name
        box = node.bbox
        assert (box.left, box.top, box.right, box.bottom) == bbox, name
        assert node.parent_id == (None if parent is None else ids[parent]), name
        assert node.depth == depth, name
        assert node.has_pixels == (kind == "pixel"), name
        assert (node.text, node.text_runs, node.smart_object) == (None, [], None)
    children = {node.name: node.children for node in tree.layers}
    assert children["Sky"] == [ids[2]]
    assert children["Town"] == [ids[4], ids[8]]  # House, a group in a group, and Shadow
    assert children["House"] == [ids[5], ids[6], ids[7]]
    assert children["Notes"] == [ids[11]]
    assert all(not node.children for node in tree.layers if node.kind != "group")


def test_preview_uses_the_stored_composite(demo: bytes) -> None:
    preview = psd.render_preview(demo)
    assert preview.source == "composite"
    image = image_of(preview.png)
    assert image.size == (preview.width, preview.height) == DEMO_SIZE
    for xy, colour in DEMO_COLOURS:
        assert_colour(image, xy, colour)
    assert image_of(preview.thumbnail_png).size == (256, 192)


def test_preview_renders_the_layers_when_there_is_no_composite() -> None:
    data = make_psd(DEMO_LAYERS, DEMO_SIZE, composite=False)
    preview = psd.render_preview(data, thumbnail_size=100)
    assert preview.source == "rendered"
    image = image_of(preview.png)
    assert image.size == DEMO_SIZE
    for xy, colour in DEMO_COLOURS:
        assert_colour(image, xy, colour)
    assert image_of(preview.thumbnail_png).size == (100, 75)


def test_a_thumbnail_of_a_small_document_is_scaled_up_to_the_size() -> None:
    data = make_psd([Fill("red", (255, 0, 0), (0, 0, 5, 10))], (5, 10))
    thumbnail = image_of(psd.render_preview(data, thumbnail_size=64).thumbnail_png)
    assert thumbnail.size == (32, 64)


def test_export_writes_one_png_per_visible_pixel_layer(demo: bytes) -> None:
    tree = psd.parse(demo)
    images = psd.export_layers(demo)
    assert [image.filename for image in images] == [
        "000-background.png",
        "002-sun.png",
        "005-wall.png",
        "006-window.png",
        "007-light.png",
        "008-shadow.png",
    ]
    for image in images:
        index = int(image.filename[:3])
        node = tree.layers[index]
        assert (image.layer_id, image.name) == (node.id, node.name)
        assert (image.left, image.top) == (node.bbox.left, node.bbox.top)
        assert (image.width, image.height) == (
            node.bbox.right - node.bbox.left,
            node.bbox.bottom - node.bbox.top,
        )
        png = image_of(image.png)
        assert png.size == (image.width, image.height)
        colour = fills(DEMO_LAYERS)[image.name].color
        assert_colour(png, (image.width // 2, image.height // 2), colour)  # its own pixels


def fills(layers: tuple[Fill | Group, ...]) -> dict[str, Fill]:
    found: dict[str, Fill] = {}
    for spec in layers:
        if isinstance(spec, Group):
            found.update(fills(spec.layers))
        else:
            found[spec.name] = spec
    return found


def test_export_names_are_unique_slugs() -> None:
    layers = [
        Fill("Ünïcode / Layer #1", (255, 0, 0), (0, 0, 4, 4)),
        Fill("Same", (0, 255, 0), (4, 0, 8, 4)),
        Fill("Same", (0, 0, 255), (8, 0, 12, 4)),
        Fill("***", (9, 9, 9), (12, 0, 16, 4)),
    ]
    images = psd.export_layers(make_psd(layers, (16, 4)))
    assert [image.filename for image in images] == [
        "000-unicode-layer-1.png",
        "001-same.png",
        "002-same.png",
        "003-layer.png",
    ]


@pytest.fixture(scope="module")
def one_layer() -> bytes:
    return make_psd([Fill("title", (0, 0, 0), (10, 10, 60, 30))], (80, 40))


def test_type_layers_give_their_text_and_each_runs_font_and_size(one_layer: bytes) -> None:
    runs = [(6, "ArialMT", 24.0), (5, "Helvetica-Bold", 12.5)]
    node = psd.parse(factory.with_text(one_layer, "Hello world", runs)).layers[0]
    assert (node.kind, node.text) == ("type", "Hello world")
    assert [(run.text, run.font, run.size) for run in node.text_runs] == [
        ("Hello ", "ArialMT", 24.0),
        ("world", "Helvetica-Bold", 12.5),
    ]


@pytest.mark.parametrize("broken", factory.BROKEN_ENGINE_DATA)
def test_broken_text_engine_data_is_refused_as_corrupt(one_layer: bytes, broken: str) -> None:
    engine = factory.BROKEN_ENGINE_DATA[broken]
    data = factory.with_text(one_layer, "Hello world", [(11, "ArialMT", 24.0)], engine=engine)
    assert psd.inspect(data).layer_count == 1  # the header and records are fine
    with pytest.raises(PsdError) as raised:
        psd.parse(data)
    assert raised.value.code == "corrupt"
    assert "title" in raised.value.message


# -- colour modes and depths ----------------------------------------------------------

WHITE = {"RGB": (255, 255, 255), "CMYK": (0, 0, 0, 0), "L": (255,)}


@pytest.mark.parametrize("composite", [True, False], ids=["composite", "rendered"])
@pytest.mark.parametrize(
    ("mode", "depth", "colour", "rgb"),
    [
        ("RGB", 16, (255, 0, 0), (255, 0, 0)),
        ("RGB", 32, (0, 0, 255), (0, 0, 255)),
        ("CMYK", 8, (0, 255, 255, 0), (255, 0, 0)),
        ("CMYK", 16, (255, 0, 255, 0), (0, 255, 0)),
        ("L", 8, (100,), (100, 100, 100)),
        ("L", 16, (200,), (200, 200, 200)),
    ],
)
def test_other_modes_and_depths_preview_as_8_bit_rgb(
    mode: str, depth: Any, colour: tuple[int, ...], rgb: tuple[int, ...], composite: bool
) -> None:
    layers = [Fill("paper", WHITE[mode], (0, 0, 40, 30)), Fill("ink", colour, (10, 10, 30, 20))]
    data = make_psd(layers, (40, 30), mode=mode, depth=depth, composite=composite)
    info = psd.inspect(data)
    assert (info.depth, info.color_mode) == (depth, {"L": "GRAYSCALE"}.get(mode, mode))
    preview = psd.render_preview(data)
    assert preview.source == ("composite" if composite else "rendered")
    image = image_of(preview.png)
    assert_colour(image, (20, 15), rgb)
    assert_colour(image, (2, 2), (255, 255, 255))
    ink = psd.export_layers(data)[1]
    assert_colour(image_of(ink.png), (10, 5), rgb)


# -- inputs that are not PSD documents, or not whole ones -------------------------------------


@ALL
@pytest.mark.parametrize(
    "data",
    [b"", b"8B", b"hello, world\n" * 20, factory.png_bytes()],
    ids=["empty", "prefix", "text", "png"],
)
def test_what_is_not_a_psd_is_refused(function: Callable[..., Any], data: bytes) -> None:
    assert error_of(function, data).code == "not_psd"


def cut_points(data: bytes) -> dict[str, int]:
    """Where to cut a valid document; every one of them gives ``truncated``."""
    at = factory.sections(data)
    return {
        "header-signature": 4,
        "header-middle": 13,
        "header-last-byte": 25,
        "colour-mode-length": 26,
        "resources-length": at.resources + 2,
        "resources": at.resources + 20,
        "layer-section-length": at.layers + 3,
        "layer-records": at.layers + 100,
        "layer-channels": (at.layers + at.image_data) // 2,
        "before-image-data": at.image_data,
        "image-compression": at.image_data + 1,
        "image-row-table": at.image_rows + 10,
        "image-data": (at.image_rows + len(data)) // 2,
        "last-byte": len(data) - 1,
    }


CUTS = list(cut_points(make_demo_psd()))


@ALL
@pytest.mark.parametrize("where", CUTS)
def test_a_document_cut_short_anywhere_is_truncated(
    demo: bytes, function: Callable[..., Any], where: str
) -> None:
    cut = demo[: cut_points(demo)[where]]
    error = error_of(function, cut)
    assert error.code == "truncated", error


@ALL
@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (lambda data: factory.with_header(data, version=3), "version 3"),
        (lambda data: factory.with_header(data, channels=0), "0 channels"),
        (lambda data: factory.with_header(data, width=0), "size 0x600"),
        (lambda data: factory.with_header(data, depth=7), "7 bits"),
        (lambda data: factory.with_header(data, mode=5), "colour mode 5"),
        (
            lambda data: factory.patched(
                data, factory.sections(data).image_data, struct.pack(">H", 9)
            ),
            "compression 9",
        ),
        (factory.with_layer_info_overrun, "Invalid data section size"),
    ],
    ids=["version", "channels", "width", "depth", "mode", "compression", "layer-info-length"],
)
def test_inconsistent_sections_are_corrupt(
    demo_psd: bytes,
    function: Callable[..., Any],
    tamper: Callable[[bytes], bytes],
    fragment: str,
) -> None:
    error = error_of(function, tamper(demo_psd))
    assert error.code == "corrupt", error
    assert fragment in error.message


def test_undecodable_layer_pixels_are_corrupt_when_decoded(demo_psd: bytes) -> None:
    data = factory.with_broken_layer_pixels(demo_psd)
    assert len(psd.parse(data).layers) == len(DEMO_TREE)  # parse decodes no pixels
    assert psd.render_preview(data).source == "composite"  # nor does the stored composite
    error = error_of(psd.export_layers, data)
    assert error.code == "corrupt"
    assert "RLE decode failed" in error.message


# -- limits ---------------------------------------------------------------------------


@ALL
def test_a_huge_canvas_is_refused_before_psd_tools_or_a_child_is_reached(
    demo_psd: bytes, function: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header alone must decide")

    monkeypatch.setattr(psd.PSDImage, "open", unreachable)
    monkeypatch.setattr(psd.sandbox, "run", unreachable)
    huge = factory.with_header(demo_psd, width=300_000, height=300_000)
    error = error_of(function, huge)
    assert error.code == "too_large"
    assert "300000x300000" in error.message


@ALL
def test_the_file_and_canvas_size_limits(demo_psd: bytes, function: Callable[..., Any]) -> None:
    small_file = Limits(max_file_bytes=len(demo_psd) - 1)
    assert error_of(function, demo_psd, small_file).code == "too_large"
    small_canvas = Limits(max_canvas_pixels=800 * 600 - 1)
    assert error_of(function, demo_psd, small_canvas).code == "too_large"


@pytest.fixture(scope="module")
def blank_layer() -> bytes:
    """A 3000x3000 layer (36 MB of pixels) that ZIP shrinks to a few kilobytes."""
    return factory.big_blank_layer(3000)


@ALL
def test_a_layer_that_inflates_past_the_budget(
    blank_layer: bytes, function: Callable[..., Any]
) -> None:
    assert len(blank_layer) < 100_000
    assert psd.parse(blank_layer).layers[0].bbox.right == 3000  # fine within the defaults
    error = error_of(function, blank_layer, Limits(max_decompressed_bytes=16 * 1024**2))
    assert error.code == "decompression_limit"


@ALL
def test_a_layer_above_the_layer_pixel_limit(
    blank_layer: bytes, function: Callable[..., Any]
) -> None:
    error = error_of(function, blank_layer, Limits(max_layer_pixels=3000 * 3000 - 1))
    assert error.code == "too_large"
    assert "3000x3000" in error.message


@ALL
def test_too_many_layers(demo_psd: bytes, function: Callable[..., Any]) -> None:
    assert error_of(function, demo_psd, Limits(max_layers=11)).code == "too_many_layers"
    function(demo_psd, Limits(max_layers=12))


@ALL
def test_nesting_deeper_than_the_limit(function: Callable[..., Any]) -> None:
    function(factory.nested(5), Limits(max_depth=5))  # the leaf is inside 5 groups
    assert error_of(function, factory.nested(6), Limits(max_depth=5)).code == "too_deep"
    assert error_of(function, factory.nested(40)).code == "too_deep"  # the default is 32


def test_absurd_nesting_is_too_deep_even_where_psd_tools_recurses() -> None:
    data = factory.nested(200)
    deep_enough = Limits(max_depth=1000)
    tree = psd.parse(data, deep_enough)  # the service itself walks without recursion
    assert max(node.depth for node in tree.layers) == 200
    error = error_of(psd.render_preview, data, deep_enough)  # psd-tools renders recursively
    assert error.code == "too_deep"
    assert psd.render_preview(factory.nested(3)).source == "rendered"  # the parent is fine


# -- the render child -----------------------------------------------------------------


@pytest.mark.parametrize("function", [psd.render_preview, psd.export_layers])
def test_a_render_over_its_memory_is_render_memory(
    demo_psd: bytes, function: Callable[..., Any]
) -> None:
    # 1 MiB is less than any Python process maps before it starts: the child cannot succeed.
    error = error_of(function, demo_psd, Limits(render_memory_bytes=1024**2))
    assert error.code == "render_memory"
    assert psd.render_preview(demo_psd).source == "composite"  # the next render is fine


@pytest.mark.parametrize("function", [psd.render_preview, psd.export_layers])
def test_a_render_over_its_time_is_render_timeout(function: Callable[..., Any]) -> None:
    # Rendering takes seconds (six 2000x2000 layers, blended): 50 ms cannot be enough.
    data = factory.slow_to_render()
    error = error_of(function, data, Limits(render_timeout_s=0.05))
    assert error.code == "render_timeout"
    assert psd.render_preview(make_demo_psd()).source == "composite"


def test_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(PsdError("corrupt", "bad")))
    assert (error.code, error.message, str(error)) == ("corrupt", "bad", "corrupt: bad")


def test_a_thumbnail_size_below_one_is_a_programming_error(demo_psd: bytes) -> None:
    with pytest.raises(ValueError, match="thumbnail_size"):
        psd.render_preview(demo_psd, thumbnail_size=0)
