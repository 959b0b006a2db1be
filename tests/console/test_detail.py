"""DetailScreen and the image widget, driven with Pilot over a state folded from real events.

The artefacts are what the real PSD services make of the demo file: the layer tree JSON
and the preview PNG, served by a small async fetcher instead of the object store.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image
from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text
from textual.app import App
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Static, TabbedContent, TabPane, Tabs
from textual.widgets.tree import TreeNode

from console.state import ConsoleState
from console.widgets.detail import DetailScreen, EventJson, LayerTree, Timeline
from console.widgets.image import (
    ASCII_RAMP,
    HALF_BLOCK,
    HalfBlockImage,
    ImageView,
    fit_cells,
)
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from engine.services import psd
from engine.services.samples import DEMO_LAYERS, Fill, Group, make_demo_psd
from tests.support.waiting import until

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WF = "wf-" + "0" * 29
TREE_KEY = f"{WF}/layers.json"
PREVIEW_KEY = f"{WF}/preview.png"
STEPS = (
    ("validate", "psd.validate", 12.0),
    ("parse", "psd.parse", 48.5),
    ("preview", "psd.preview", 640.0),
    ("export", "psd.export_layers", 210.0),
)
Fetcher = Callable[[str], Awaitable[bytes]]


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def demo_names(layers: tuple[Fill | Group, ...] = DEMO_LAYERS) -> Iterator[str]:
    for layer in layers:
        yield layer.name
        if isinstance(layer, Group):
            yield from demo_names(layer.layers)


@pytest.fixture(scope="module")
def artefacts() -> dict[str, bytes]:
    """The demo file through the real services: its layer tree JSON and preview PNG."""
    data = make_demo_psd()
    return {
        TREE_KEY: psd.parse(data).model_dump_json().encode(),
        PREVIEW_KEY: psd.render_preview(data).png,
    }


def manifest() -> dict[str, Any]:
    return {
        "workflow_id": WF,
        "filename": "demo.psd",
        "document": {"width": 800, "height": 600, "color_mode": "RGB", "depth": 8},
        "layers": {
            "tree_key": TREE_KEY,
            "layers": 12,
            "by_kind": {"group": 4, "pixel": 8},
            "visible": 9,
            "max_depth": 3,
            "top_level": ["Background", "Sky", "Town", "Draft", "Notes"],
            "fonts": [],
        },
        "preview": {"key": PREVIEW_KEY, "width": 800, "height": 600, "source": "composite"},
        "layer_images": [],
        "timings_ms": {"total": 950.0},
    }


def workflow_events(
    fail_at: str | None = None, outcome_manifest: dict[str, Any] | None = None
) -> list[BaseEvent]:
    """A workflow's events as the engine publishes them: orchestrator, step tasks, outcome."""
    common = {"workflow_id": WF, "filename": "demo.psd", "correlation_id": WF}
    events: list[BaseEvent] = [
        PsdWorkflowSubmitted(**common, input_key="sha256-1", size_bytes=1, timestamp=at(0)),
        TaskQueued(task_id=WF, task_name="psd.process", correlation_id=WF, timestamp=at(2)),
        TaskStarted(
            task_id=WF, task_name="psd.process", worker_id="w-a:1", correlation_id=WF,
            timestamp=at(10),
        ),
    ]  # fmt: skip
    now = 10.0
    for step, task, ms in STEPS:
        task_id = uuid.uuid4().hex
        ids = {"task_id": task_id, "task_name": task, "correlation_id": WF}
        events += [
            TaskQueued(**ids, causation_id=WF, timestamp=at(now + 1)),
            TaskStarted(**ids, worker_id="w-b:2", timestamp=at(now + 2)),
        ]
        if step == fail_at:
            events += [
                TaskFailed(
                    **ids, worker_id="w-b:2", duration_ms=ms, error_type="PsdError",
                    error_message="corrupt: layer 3 ends early", timestamp=at(now + 2 + ms),
                ),
                PsdWorkflowFailed(
                    **common, step=step, error_code="corrupt",
                    error_message="layer 3 ends early", duration_ms=now + ms + 4,
                    timestamp=at(now + ms + 4),
                ),
            ]  # fmt: skip
            return events
        events += [
            TaskSucceeded(**ids, worker_id="w-b:2", duration_ms=ms, timestamp=at(now + 2 + ms)),
            PsdStepCompleted(
                **common, step=step, duration_ms=ms + 3, summary={}, timestamp=at(now + ms + 3)
            ),
        ]
        now += ms + 4
    events += [
        PsdWorkflowCompleted(
            **common, duration_ms=now, manifest=outcome_manifest or manifest(),
            timestamp=at(now + 1),
        ),
        TaskSucceeded(
            task_id=WF, task_name="psd.process", worker_id="w-a:1", duration_ms=now,
            correlation_id=WF, timestamp=at(now + 2),
        ),
    ]  # fmt: skip
    return events


def folded(events: list[BaseEvent]) -> ConsoleState:
    state = ConsoleState()
    for event in events:
        state.fold(event)
    return state


def serving(store: dict[str, bytes]) -> Fetcher:
    async def fetch(key: str) -> bytes:
        return store[key]

    return fetch


class DetailApp(App[None]):
    """An app whose default screen stays underneath, so that Escape has somewhere to go."""

    def __init__(self, screen: DetailScreen, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detail = screen

    def on_mount(self) -> None:
        self.push_screen(self.detail)


def text_of(static: Static) -> str:
    content = static.content
    if isinstance(content, Syntax):
        return content.code
    return content.plain if isinstance(content, Text) else str(content)


def labels(node: TreeNode[Any]) -> list[str]:
    """The labels under ``node``, depth first, as the tree shows them."""
    found: list[str] = []
    for child in node.children:
        found += [str(child.label), *labels(child)]
    return found


async def settle(pilot: Pilot[None]) -> None:
    """Wait for the artefact workers and the redraws they cause."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def timeline_cells(screen: DetailScreen) -> list[list[str]]:
    table = screen.query_one(Timeline)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


# -- the timeline ------------------------------------------------------------------------


async def test_workflow_timeline_lists_every_event_in_order_with_offsets() -> None:
    events = workflow_events()
    shuffled = events[5:] + events[:5]  # arrival order is not time order
    screen = DetailScreen(folded(shuffled), WF)
    async with DetailApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = timeline_cells(screen)
        assert [row[1] for row in rows] == [event.event_type for event in events]
        assert rows[0][0] == "+0.000 s"
        assert rows[1][0] == "+0.002 s"
        assert rows[-1][0] == f"+{(events[-1].timestamp - T0).total_seconds():.3f} s"
        parse = next(row for row in rows if row[1] == "psd.step.completed" and row[2] == "parse")
        assert parse[3] == "51.5 ms"  # the step's duration
        assert parse[5].strip("█▏▎▍▌▋▊▉") == "" and parse[5]  # and its bar
        preview = next(r for r in rows if r[1] == "psd.step.completed" and r[2] == "preview")
        assert len(preview[5]) > len(parse[5])  # longer step, longer bar
        started = next(row for row in rows if row[1] == "task.started" and row[2] == "psd.parse")
        assert started[4] == "w-b:2"
        header = text_of(screen.query_one("#detail-header", Static))
        assert "psd demo.psd" in header and "completed" in header
        assert f"correlation {WF}" in header and "worker w-a:1" in header
        assert "parse 51.5 ms" in header and "preview 643 ms" in header


async def test_selecting_an_event_shows_its_json() -> None:
    events = workflow_events()
    screen = DetailScreen(folded(events), WF)
    async with DetailApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        body = screen.query_one("#event-json-body", Static)
        assert isinstance(body.content, Syntax)
        # It opens on the workflow's own latest event: the orchestrator's success.
        assert text_of(body) == events[-1].model_dump_json(indent=2)
        await pilot.press("ctrl+home")
        await pilot.pause()
        assert text_of(body) == events[0].model_dump_json(indent=2)
        await pilot.press("down", "down")
        await pilot.pause()
        assert screen.query_one(Timeline).selected == events[2]
        assert text_of(body) == events[2].model_dump_json(indent=2)
        assert screen.query_one(EventJson).border_title == f"task.started 3/{len(events)}"


# -- a completed workflow's artefacts ----------------------------------------------------


async def test_completed_demo_workflow_shows_layer_tree_and_preview(
    artefacts: dict[str, bytes],
) -> None:
    screen = DetailScreen(folded(workflow_events()), WF, serving(artefacts))
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert screen.query_one(TabbedContent).active == "tab-layers"
        tree = screen.query_one(LayerTree)
        assert tree.display
        shown = labels(tree.root)
        names = [label.split("  ")[0] for label in shown]
        assert sorted(names) == sorted(demo_names())
        assert names[:2] == ["Notes", "Note"]  # top first, as Photoshop lists them
        by_name = dict(zip(names, shown, strict=True))
        assert "group" in by_name["House"] and "200x200" in by_name["Wall"]
        assert "hidden" in by_name["Draft"] and "hidden" not in by_name["Wall"]
        assert "hidden by a group" in by_name["Note"]
        assert "opacity 50%" in by_name["Shadow"] and "opacity" not in by_name["Sun"]
        assert "800x600" in str(tree.root.label)
        summary = text_of(screen.query_one("#layers-summary", Static))
        assert "12 layers" in summary and "9 visible" in summary

        await pilot.press("p")
        await pilot.pause()
        assert screen.query_one(TabbedContent).active == "tab-preview"
        view = screen.query_one(ImageView)
        assert view.display and view.image is not None
        assert view.uses_color
        image = view.renderable()
        assert image is not None and image.color
        columns, rows = image.cell_size
        width, height = view.content_size
        assert columns <= width and rows <= height
        assert columns == width or rows == height  # as big as fits
        assert abs(columns / (2 * rows) - 800 / 600) < 0.1  # square pixels, ratio kept
        lines = image.lines()
        assert len(lines) == rows
        assert all(sum(len(s.text) for s in line) == columns for line in lines)
        segments = [segment for line in lines for segment in line]
        assert {char for s in segments for char in s.text} == {HALF_BLOCK}
        colours = set()
        for segment in segments:
            assert segment.style is not None
            assert segment.style.color is not None and segment.style.bgcolor is not None
            colours.add(segment.style.color.get_truecolor())
        assert (255, 255, 255) in colours  # the background
        assert any(r > 200 and g < 60 and b < 60 for r, g, b in colours)  # the red wall
        console = Console(color_system="truecolor", width=width, record=True, file=io.StringIO())
        console.print(image)
        assert "\x1b[38;2;" in console.export_text(styles=True)
        # On screen: `rows` lines of `columns` half-blocks, centred in the widget.
        strips = view.render_lines(Region(0, 0, *view.size))
        drawn = [strip.text for strip in strips if HALF_BLOCK in strip.text]
        assert len(drawn) == rows
        assert all(line.count(HALF_BLOCK) == columns for line in drawn)
        margin = drawn[0].index(HALF_BLOCK)
        assert abs(margin - (view.size.width - columns - margin)) <= 1

        view.color = False  # the fallback: same cells, characters of the ramp only
        plain = view.renderable()
        assert plain is not None and plain.cell_size == (columns, rows)
        characters = {c for line in plain.lines() for s in line for c in s.text}
        assert characters <= set(ASCII_RAMP) and len(characters) > 2
        assert all(s.style is None for line in plain.lines() for s in line)


async def test_artefacts_show_a_loading_placeholder_until_fetched(
    artefacts: dict[str, bytes],
) -> None:
    release = asyncio.Event()

    async def slow(key: str) -> bytes:
        await release.wait()
        return artefacts[key]

    screen = DetailScreen(folded(workflow_events()), WF, slow)
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await pilot.pause()
        assert text_of(screen.query_one("#layers-status", Static)) == "loading layers…"
        assert text_of(screen.query_one("#preview-status", Static)) == "loading preview…"
        assert not screen.query_one(LayerTree).display
        release.set()
        await settle(pilot)
        assert screen.query_one(LayerTree).display
        assert screen.query_one(ImageView).image is not None


async def test_a_fetcher_that_raises_shows_the_error(artefacts: dict[str, bytes]) -> None:
    async def broken(key: str) -> bytes:
        if key == TREE_KEY:
            raise ConnectionError("object store unreachable")
        return b"this is not a png"

    screen = DetailScreen(folded(workflow_events()), WF, broken)
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        layers = text_of(screen.query_one("#layers-status", Static))
        assert "Could not load the layers" in layers and TREE_KEY in layers
        assert "ConnectionError: object store unreachable" in layers
        preview = text_of(screen.query_one("#preview-status", Static))
        assert "Could not load the preview" in preview and "UnidentifiedImageError" in preview
        assert not screen.query_one(LayerTree).display
        await pilot.press("p", "l", "t")
        assert pilot.app.screen is screen  # still running, still here


async def test_odd_manifest_and_tree_show_what_is_there() -> None:
    odd_manifest: dict[str, Any] = {"layers": "nonsense", "preview": {"width": 3}, "extra": [1]}
    screen = DetailScreen(folded(workflow_events(outcome_manifest=odd_manifest)), WF)
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        assert "no layers artefact" in text_of(screen.query_one("#layers-status", Static))
        assert "no preview artefact" in text_of(screen.query_one("#preview-status", Static))
        assert "3x?" in text_of(screen.query_one("#preview-caption", Static))

    odd_tree = {
        "document": "?",
        "layers": [
            {"id": 1, "name": "Loop A", "parent_id": 2, "opacity": "x", "bbox": [1]},
            {"id": 2, "name": "Loop B", "parent_id": 1},
            "junk",
            {"name": "No id", "kind": "pixel", "visible": False},
            {"id": [3], "name": "Odd id", "parent_id": {"a": 1}},
        ],
    }
    store = {TREE_KEY: json.dumps(odd_tree).encode(), PREVIEW_KEY: b""}
    screen = DetailScreen(folded(workflow_events()), WF, serving(store))
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        names = [label.split("  ")[0] for label in labels(screen.query_one(LayerTree).root)]
        assert sorted(names) == ["Loop A", "Loop B", "No id", "Odd id"]

    store = {TREE_KEY: b"{not json", PREVIEW_KEY: b""}
    screen = DetailScreen(folded(workflow_events()), WF, serving(store))
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        assert "Could not load the layer tree" in text_of(
            screen.query_one("#layers-status", Static)
        )


async def test_without_a_fetcher_the_screen_says_so() -> None:
    screen = DetailScreen(folded(workflow_events()), WF)
    async with DetailApp(screen).run_test(size=(100, 34)) as pilot:
        await settle(pilot)
        assert "cannot load" in text_of(screen.query_one("#layers-status", Static))


# -- failures ----------------------------------------------------------------------------


async def test_failed_workflow_header_shows_step_code_and_message() -> None:
    screen = DetailScreen(folded(workflow_events(fail_at="parse")), WF)
    async with DetailApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        header = screen.query_one("#detail-header", Static)
        text = text_of(header)
        assert "failed" in text
        assert "failed at step parse: corrupt" in text
        assert "layer 3 ends early" in text
        content = header.content
        assert isinstance(content, Text)
        failure = text.index("failed at step parse")
        assert any("red" in str(span.style) for span in content.spans if span.start >= failure)
        status = text_of(screen.query_one("#layers-status", Static))
        assert "failed at step parse" in status
        assert timeline_cells(screen)[-1][1] == "psd.workflow.failed"


async def test_task_rows_show_their_error_and_only_a_timeline() -> None:
    task_id = uuid.uuid4().hex
    ids = {"task_id": task_id, "task_name": "tests.flaky", "correlation_id": task_id}
    events: list[BaseEvent] = [
        TaskQueued(**ids, timestamp=at(0)),
        TaskStarted(**ids, worker_id="w-c:3", timestamp=at(5)),
        TaskFailed(
            **ids, worker_id="w-c:3", attempt=1, duration_ms=20.0, error_type="TimeoutError",
            error_message="upstream took too long", will_retry=True, timestamp=at(25),
        ),
    ]  # fmt: skip
    state = folded(events)
    screen = DetailScreen(state, task_id)
    async with DetailApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        header = text_of(screen.query_one("#detail-header", Static))
        assert "tests.flaky" in header and "retrying" in header
        assert "TimeoutError" in header and "upstream took too long" in header
        assert len(screen.query(TabPane)) == 1
        assert screen.check_action("tab", ("layers",)) is False
        state.fold(
            TaskDeadLettered(
                **ids, stream="TASKS", consumer="workers", stream_seq=7, deliveries=3,
                timestamp=at(900),
            )
        )  # fmt: skip
        screen.refresh_from_state()
        await pilot.pause()
        header = text_of(screen.query_one("#detail-header", Static))
        assert (
            "dead lettered" in header
            and "dead_lettered" not in header
            and "gave up after 3 deliveries" in header
        )
        assert timeline_cells(screen)[-1][1] == "task.dead_lettered"


# -- live --------------------------------------------------------------------------------


async def test_new_events_appear_while_open_and_the_selection_stays(
    artefacts: dict[str, bytes],
) -> None:
    events = workflow_events()
    state = folded(events[:8])  # submitted, orchestrator, validate done, parse queued
    screen = DetailScreen(state, WF, serving(artefacts))
    async with DetailApp(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = screen.query_one(Timeline)
        assert table.row_count == 8
        assert "appear when the workflow completes" in text_of(
            screen.query_one("#layers-status", Static)
        )
        await pilot.press("ctrl+home", "down", "down", "down")
        chosen = table.selected
        assert chosen == events[3]
        for event in events[8:]:
            state.fold(event)
        # The screen's own refresh timer picks them up, not a call from here.
        await until(pilot, lambda: table.row_count == len(events), 30)
        assert [row[1] for row in timeline_cells(screen)] == [e.event_type for e in events]
        assert table.selected == chosen
        body = text_of(screen.query_one("#event-json-body", Static))
        assert body == chosen.model_dump_json(indent=2)
        # An older event arriving late moves rows down; the selection follows its event.
        late = TaskQueued(task_id="late", task_name="late.task", correlation_id=WF, timestamp=at(1))
        state.fold(late)
        screen.refresh_from_state()
        await pilot.pause()
        assert table.selected == chosen and table.cursor_row == 4
        assert timeline_cells(screen)[1][2] == "late.task"
        await settle(pilot)  # completed while open: the artefacts load now
        assert screen.query_one(LayerTree).display
        header = text_of(screen.query_one("#detail-header", Static))
        assert "completed" in header


async def test_an_evicted_row_is_told_from_its_trace() -> None:
    state = folded(workflow_events(fail_at="preview"))
    del state.rows[WF]
    screen = DetailScreen(state, WF)
    async with DetailApp(screen).run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        header = text_of(screen.query_one("#detail-header", Static))
        assert "psd demo.psd" in header and "evicted" in header
        assert "failed at step preview: corrupt" in header
        assert len(timeline_cells(screen)) == len(state.trace(WF))


async def test_an_unknown_key_says_nothing_is_known() -> None:
    state = ConsoleState()
    screen = DetailScreen(state, "gone")
    async with DetailApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "Nothing known about gone" in text_of(screen.query_one("#detail-header", Static))
        assert screen.query_one("#timeline-empty", Static).display
        state.fold(TaskQueued(task_id="gone", task_name="late.arrival", timestamp=at(0)))
        screen.refresh_from_state()
        await pilot.pause()
        assert "late.arrival" in text_of(screen.query_one("#detail-header", Static))
        assert not screen.query_one("#timeline-empty", Static).display


# -- keys --------------------------------------------------------------------------------


async def test_escape_pops_the_screen() -> None:
    screen = DetailScreen(folded(workflow_events()), WF)
    app = DetailApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is not screen and not isinstance(app.screen, DetailScreen)


async def test_tab_moves_focus_and_bindings_have_ids() -> None:
    screen = DetailScreen(folded(workflow_events()), WF)
    async with DetailApp(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(pilot.app.focused, Timeline)
        await pilot.press("tab")
        assert isinstance(pilot.app.focused, EventJson)
        await pilot.press("shift+tab")
        assert isinstance(pilot.app.focused, Timeline)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(pilot.app.focused, Tabs)  # the tree is not loaded: no fetcher
        assert screen.query_one(TabbedContent).active == "tab-layers"
    for binding in DetailScreen.BINDINGS:
        assert not isinstance(binding, tuple)
        assert binding.id and binding.id.startswith("detail_") and binding.description


# -- the image widget alone --------------------------------------------------------------


def test_fit_cells_keeps_the_aspect_ratio() -> None:
    assert fit_cells(800, 600, 80, 24) == (64, 24)  # height bound: 48 pixel rows
    assert fit_cells(800, 200, 80, 24) == (80, 10)  # width bound
    assert fit_cells(10, 10, 80, 24) == (48, 24)  # scaled up too
    assert fit_cells(0, 10, 80, 24) == (0, 0)


def test_half_blocks_pair_two_pixels_per_cell() -> None:
    image = Image.new("RGBA", (2, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    image.putpixel((0, 1), (0, 0, 255, 255))
    rendered = HalfBlockImage(image, 2, 2, background=(9, 9, 9))
    assert rendered.cell_size == (2, 2)
    first = rendered.lines()[0][0]
    assert first.text == HALF_BLOCK and first.style is not None
    assert first.style.color is not None and first.style.bgcolor is not None
    assert first.style.color.get_truecolor() == (255, 0, 0)  # upper pixel
    assert first.style.bgcolor.get_truecolor() == (0, 0, 255)  # lower pixel
    rest = rendered.lines()[1][0]  # transparent: laid over the background
    assert rest.style is not None and rest.style.color is not None
    assert rest.style.color.get_truecolor() == (9, 9, 9)


def test_the_ramp_follows_luminance() -> None:
    image = Image.new("L", (4, 2))
    for x, value in enumerate((0, 90, 180, 255)):
        image.putpixel((x, 0), value)
        image.putpixel((x, 1), value)
    text = "".join(s.text for s in HalfBlockImage(image, 4, 1, color=False).lines()[0])
    assert text[0] == " " and text[-1] == "@"
    assert [ASCII_RAMP.index(c) for c in text] == sorted(ASCII_RAMP.index(c) for c in text)


async def test_image_view_falls_back_without_colour() -> None:
    picture = Image.new("RGB", (40, 20), (200, 30, 30))

    class Viewer(App[None]):
        def compose(self) -> Any:
            yield ImageView(picture)

    async with Viewer().run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(ImageView)
        assert view.uses_color
        pilot.app.no_color = True  # what NO_COLOR in the environment sets
        assert not view.uses_color
        view.color = True  # a constructor flag or attribute wins
        assert view.uses_color
    async with Viewer(ansi_color=True).run_test(size=(40, 12)) as pilot:
        view = pilot.app.query_one(ImageView)
        assert not view.uses_color
        rendered = view.renderable()
        assert rendered is not None and not rendered.color
        assert all(set(s.text) <= set(ASCII_RAMP) for line in rendered.lines() for s in line)


def test_a_dead_letters_header_counts_the_servers_deliveries_and_spells_its_state() -> None:
    """Never started (no worker knew the task): still "attempt 3" when the server tried 3 times."""
    from console.widgets.detail import header_text
    from engine.events.schemas import TaskDeadLettered

    state = ConsoleState()
    task_id = uuid.uuid4().hex
    state.fold(
        TaskDeadLettered(
            task_id=task_id,
            task_name="report.email",
            stream="TASKS",
            consumer="default",
            stream_seq=7,
            deliveries=3,
            correlation_id=task_id,
        )
    )
    row = state.rows[task_id]
    text = header_text(row, task_id, state.trace(task_id), evicted=False).plain
    assert "attempt 3" in text and " dead lettered " in text and "dead_lettered" not in text
