"""Pictures in the terminal: truecolor half-blocks, or an ASCII ramp without colour.

A cell is about twice as tall as it is wide, so "▀" with the upper pixel as its
foreground and the lower one as its background shows two square pixels per
cell. Where colour is off (NO_COLOR, an app limited to the terminal's ANSI
palette, a terminal without colour) those colours would be stripped or wrong,
so each cell becomes one character of a luminance ramp instead. Both modes fill
the same cells, so a layout does not move when the mode changes.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from PIL import Image
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.app import App

RGB = tuple[int, int, int]
HALF_BLOCK = "▀"
ASCII_RAMP = " .:-=+*#%@"  # dark to bright, as on a dark terminal
DEFAULT_BACKGROUND: RGB = (0, 0, 0)
DECODE_MAX_SIDE = 1024  # far more pixels than any terminal shows: a cheaper resize per paint


def decode_image(data: bytes, max_side: int = DECODE_MAX_SIDE) -> Image.Image:
    """Decode PNG (or any Pillow format) bytes, shrunk so its longest side is at most max_side.

    Slow for big images: call it off the event loop (a thread worker).
    """
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft("RGB", (max_side, max_side))  # JPEG decodes smaller for free
        # Palette and grey images become RGBA, so that shrinking averages colours.
        image = opened.copy() if opened.mode in ("RGB", "RGBA") else opened.convert("RGBA")
    image.thumbnail((max_side, max_side), Image.Resampling.BOX)
    return image


def fit_pixels(pixel_width: int, pixel_height: int, columns: int, rows: int) -> tuple[int, int]:
    """The image's size scaled to fit ``columns`` x ``rows`` cells of two square pixels each."""
    if pixel_width <= 0 or pixel_height <= 0 or columns <= 0 or rows <= 0:
        return 0, 0
    scale = min(columns / pixel_width, 2 * rows / pixel_height)
    return (
        max(1, min(columns, round(pixel_width * scale))),
        max(1, min(2 * rows, round(pixel_height * scale))),
    )


def fit_cells(pixel_width: int, pixel_height: int, columns: int, rows: int) -> tuple[int, int]:
    """The largest (columns, rows) of cells showing the image whole, aspect ratio kept.

    One cell is one pixel wide and two tall, since cells are twice as tall as wide.
    """
    width, height = fit_pixels(pixel_width, pixel_height, columns, rows)
    return width, math.ceil(height / 2)


def flatten(image: Image.Image, background: RGB = DEFAULT_BACKGROUND) -> Image.Image:
    """RGB, with any transparency laid over ``background``."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def luminance(pixel: RGB) -> float:
    red, green, blue = pixel
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


class HalfBlockImage:
    """A Rich renderable drawing ``image`` in at most ``width`` x ``height`` cells.

    ``color=False`` draws the ASCII ramp. ``height=None`` lets the width alone decide.
    """

    def __init__(
        self,
        image: Image.Image,
        width: int,
        height: int | None = None,
        *,
        color: bool = True,
        background: RGB = DEFAULT_BACKGROUND,
    ) -> None:
        self.image = image
        self.color = color
        self.background = background
        rows = height if height is not None else 2**31
        self.pixel_size = fit_pixels(image.width, image.height, width, rows)
        self.cell_size = self.pixel_size[0], math.ceil(self.pixel_size[1] / 2)

    def _scaled(self, size: tuple[int, int]) -> Image.Image:
        """The image at exactly ``size`` pixels: averaged when shrinking, crisp when growing."""
        shrinking = size[0] < self.image.width or size[1] < self.image.height
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
        return flatten(self.image, self.background).resize(size, resample)

    def lines(self) -> list[list[Segment]]:
        """The cells, a list of segments per row (no newlines)."""
        columns, rows = self.cell_size
        if not columns or not rows:
            return []
        return self._half_blocks(columns, rows) if self.color else self._ramp(columns, rows)

    def _grid(self, size: tuple[int, int]) -> list[list[RGB]]:
        """Rows of RGB pixels of the image scaled to ``size``."""
        width = size[0]
        data = self._scaled(size).tobytes()  # RGB: three bytes a pixel, row after row
        pixels = [(data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), 3)]
        return [pixels[start : start + width] for start in range(0, len(pixels), width)]

    def _half_blocks(self, columns: int, rows: int) -> list[list[Segment]]:
        grid = self._grid((columns, self.pixel_size[1]))
        blank = [self.background] * columns  # below an odd last pixel row
        lines: list[list[Segment]] = []
        for row in range(rows):
            upper = grid[2 * row]
            lower = grid[2 * row + 1] if 2 * row + 1 < len(grid) else blank
            line: list[Segment] = []
            for top, low in zip(upper, lower, strict=True):
                style = Style.from_color(Color.from_rgb(*top), Color.from_rgb(*low))
                if line and line[-1].style == style:  # one segment per run of equal cells
                    line[-1] = Segment(line[-1].text + HALF_BLOCK, style)
                else:
                    line.append(Segment(HALF_BLOCK, style))
            lines.append(line)
        return lines

    def _ramp(self, columns: int, rows: int) -> list[list[Segment]]:
        top = len(ASCII_RAMP) - 1
        return [
            [Segment("".join(ASCII_RAMP[round(luminance(pixel) / 255 * top)] for pixel in row))]
            for row in self._grid((columns, rows))
        ]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines():
            yield from line
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.cell_size[0], self.cell_size[0])


def app_has_color(app: App[object]) -> bool:
    """False where truecolor pixels would be stripped or unwanted.

    NO_COLOR (Textual then strips colours), an app asked to keep to the terminal's
    ANSI palette (``App(ansi_color=True)``), or a terminal Rich found colourless.
    """
    return not (app.no_color or app.ansi_color is True or app.console.color_system is None)


class ImageView(Widget):
    """Shows an image fitted and centred in the widget; ``color=None`` follows the app."""

    DEFAULT_CSS = """
    ImageView {
        width: 1fr;
        height: 1fr;
        content-align: center middle;
    }
    """

    def __init__(
        self,
        image: Image.Image | None = None,
        *,
        color: bool | None = None,
        background: RGB = DEFAULT_BACKGROUND,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._image = image
        self.color = color
        self.background = background

    @property
    def image(self) -> Image.Image | None:
        return self._image

    @image.setter
    def image(self, image: Image.Image | None) -> None:
        self._image = image
        self.refresh(layout=True)

    @property
    def uses_color(self) -> bool:
        """Half-blocks (True) or the ASCII ramp (False), as the next paint will draw."""
        return self.color if self.color is not None else app_has_color(self.app)

    def renderable(self) -> HalfBlockImage | None:
        """What the widget draws at its current size (None without an image or room)."""
        width, height = self.content_size
        if self._image is None or width <= 0 or height <= 0:
            return None
        return HalfBlockImage(
            self._image, width, height, color=self.uses_color, background=self.background
        )

    def render(self) -> HalfBlockImage | str:
        return self.renderable() or ""

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self._image.width if self._image is not None else 0

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self._image is None:
            return 0
        return HalfBlockImage(self._image, width).cell_size[1]
