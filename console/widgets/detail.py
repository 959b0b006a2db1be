"""The whole story of one task or workflow: header, timeline, raw events, layers, preview.

Everything shown comes from the ConsoleState (re-read on a timer, so a running
workflow grows while one watches) and, for a completed PSD workflow, from two
artefacts fetched through the injected ``fetch_artefact``: this screen never
talks to NATS. Event data is treated as untrusted: odd or missing fields show
as what is there, never as a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.events import Resize
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane, Tabs, Tree
from textual.widgets.tree import TreeNode

from console.format import duration, state_style
from console.state import ConsoleState, Row
from console.widgets.image import ImageView, decode_image
from console.widgets.panels import SIDE_BY_SIDE
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowEvent,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskReplayed,
    TaskSucceeded,
)

Fetcher = Callable[[str], Awaitable[bytes]]
Activity = Callable[[str], list[str]]  # key -> what operator actions did to it, oldest first
REFRESH_SECONDS = 0.5
NARROW_BELOW = 140  # columns: under this the event JSON goes below the timeline
BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉"


# -- formatting (pure) -------------------------------------------------------------------


def duration_bar(ms: float | None, longest: float, width: int = BAR_WIDTH) -> str:
    """A bar of ``width`` cells, full for ``longest``, in eighths of a cell."""
    if ms is None or ms <= 0 or longest <= 0:
        return ""
    eighths = max(1, round(min(ms / longest, 1.0) * width * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def event_style(event: BaseEvent) -> str:
    if isinstance(event, TaskFailed) and event.will_retry:
        return "yellow"
    if isinstance(event, TaskFailed | TaskDeadLettered | PsdWorkflowFailed):
        return "red"
    if isinstance(event, TaskSucceeded | PsdWorkflowCompleted | PsdStepCompleted):
        return "green"
    return ""


def event_subject(event: BaseEvent) -> str:
    """What the event is about: the task's name, the workflow's step, or its file."""
    if isinstance(event, TaskEvent):
        return event.task_name
    if isinstance(event, PsdStepCompleted | PsdWorkflowFailed):
        return event.step
    if isinstance(event, PsdWorkflowEvent):
        return event.filename
    return ""


def event_duration(event: BaseEvent) -> float | None:
    value = getattr(event, "duration_ms", None)
    return float(value) if isinstance(value, int | float) else None


def belongs_to(event: BaseEvent, key: str) -> bool:
    return getattr(event, "task_id", None) == key or getattr(event, "workflow_id", None) == key


def unique_events(events: Iterable[BaseEvent]) -> list[BaseEvent]:
    """Each event once (a redelivered event is the same event), in the given order."""
    seen: set[str] = set()
    kept: list[BaseEvent] = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            kept.append(event)
    return kept


def rebuild_row(events: Iterable[BaseEvent], key: str) -> Row | None:
    """The row ``key`` as its trace alone tells it: for a row evicted from the state."""
    scratch = ConsoleState()
    for event in events:
        scratch.fold(event)
    return scratch.rows.get(key)


def header_text(row: Row | None, key: str, events: list[BaseEvent], evicted: bool) -> Text:
    """Name, state, duration, worker, ids, attempt; a failure's step, code and message."""
    if row is None:
        return Text.assemble(
            ("Nothing known about ", "bold"),
            (key, "bold"),
            "\nIts row and events were evicted from the console's memory, or never seen.",
        )
    text = Text.assemble(
        (row.name, "bold"),
        "  ",
        (
            f" {row.shown_state.replace('_', ' ')} ",  # as the lists spell it
            f"reverse bold {state_style(row.shown_state)}".strip(),
        ),
    )
    text.append(f"  {row.kind}", "dim")
    if evicted:
        text.append(f"  (evicted from the list; rebuilt from {len(events)} events)", "dim italic")
    facts = [
        f"duration {duration(row.duration_ms) or '—'}",
        f"worker {row.worker or '—'}",
        f"attempt {row.attempt}",
    ]
    if row.step and not row.done:
        facts.append(f"at step {row.step}")
    text.append("\n" + " · ".join(facts))
    ids = f"\ncorrelation {row.correlation_id}"
    text.append(ids if row.key == row.correlation_id else f"{ids} · {row.kind} {row.key}", "dim")
    if row.stuck:
        text.append(
            f"\n⚠ no progress since {row.updated.astimezone():%H:%M:%S}: stuck (x cancels it)",
            "bold yellow",
        )
    if row.failed or row.state == "retrying":
        text.append("\n")
        text.append_text(_failure_text(row))
    elif row.steps:
        text.append("\n")
        text.append_text(_steps_text(row.steps))
    return text


def links_text(key: str, events: Iterable[BaseEvent]) -> Text:
    """Where this one came from and what was made of it, as its events say (any console)."""
    text = Text()
    for event in events:
        if isinstance(event, TaskReplayed) and event.replay_of == key:
            text.append(f"\n↪ replayed as {event.new_task_id}", "cyan")
        elif isinstance(event, TaskReplayed) and event.new_task_id == key:
            text.append(f"\n↩ replay of dead-lettered task {event.replay_of}", "cyan")
        elif (
            isinstance(event, PsdWorkflowSubmitted)
            and event.workflow_id == key
            and event.resubmitted_from
            and f"again of {event.resubmitted_from}" not in text.plain
        ):
            text.append(f"\n↩ again of workflow {event.resubmitted_from}", "cyan")
    return text


def activity_text(lines: list[str]) -> Text:
    """The operator actions on this row and their outcome, newest last (at most three)."""
    text = Text()
    for line in lines[-3:]:
        text.append("\n▸ ", "bold magenta")
        text.append(line, "magenta")
    return text


def _failure_text(row: Row) -> Text:
    style = "bold red" if row.failed else "bold yellow"
    where = (
        f"failed at step {row.step}"
        if row.kind == "workflow" and row.step
        else row.state.replace("_", " ")
    )
    what = row.error_type or "error"
    return Text.assemble(
        ("✖ " if row.failed else "↻ ", style),
        (f"{where}: {what}", style),
        "\n  ",
        (row.error_message or "(no message)", "red" if row.failed else "yellow"),
    )


def _steps_text(steps: list[tuple[str, float]]) -> Text:
    """Each step's duration, the slowest highlighted (the timeline has the bars)."""
    slowest = max((ms for _, ms in steps), default=0.0)
    text = Text("steps ", "dim")
    for index, (step, ms) in enumerate(steps):
        text.append(" · " if index else "")
        text.append(f"{step} ", "bold")
        text.append(duration(ms), "bold yellow" if ms == slowest and len(steps) > 1 else "")
    return text


# -- timeline ----------------------------------------------------------------------------


class Timeline(DataTable[Text]):
    """One line per event; the selection follows an event id, not a row index."""

    COLUMNS = ("offset", "event", "task / step", "duration", "worker", "")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.events: dict[str, BaseEvent] = {}
        self._shown: list[tuple[str, tuple[str, ...]]] = []

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    @property
    def selected(self) -> BaseEvent | None:
        if not self._shown or not 0 <= self.cursor_row < len(self._shown):
            return None
        return self.events.get(self._shown[self.cursor_row][0])

    def show(self, events: list[BaseEvent], own_key: str | None, initial: str | None) -> None:
        """Redraw if anything changed, keeping the selected event (or ``initial`` at first)."""
        rows = _timeline_rows(events, own_key)
        shown = [(event.event_id, tuple(cell.plain for cell in cells)) for event, cells in rows]
        if shown == self._shown:
            return
        keep = self.selected.event_id if self.selected and self._shown else initial
        scroll = self.scroll_y
        self.events = {event.event_id: event for event in events}
        self._shown = shown
        self.clear()
        for event, cells in rows:
            self.add_row(*cells, key=event.event_id)
        ids = [event_id for event_id, _ in shown]
        index = ids.index(keep) if keep in ids else 0
        self.move_cursor(row=index, scroll=False)
        self.scroll_to(y=scroll, animate=False, immediate=True)
        if keep not in ids:
            self.move_cursor(row=index)


def _timeline_rows(
    events: list[BaseEvent], own_key: str | None
) -> list[tuple[BaseEvent, list[Text]]]:
    if not events:
        return []
    first = events[0].timestamp
    longest = max((event_duration(e) or 0.0 for e in events), default=0.0)
    rows = []
    for event in events:
        dim = own_key is not None and not belongs_to(event, own_key)
        base = "dim" if dim else ""
        ms = event_duration(event)
        offset = (event.timestamp - first).total_seconds()
        cells = [
            Text(f"+{offset:.3f} s", base, justify="right"),
            Text(event.event_type, f"{base} {event_style(event)}".strip()),
            Text(event_subject(event), base),
            Text(duration(ms), base, justify="right"),
            Text(str(getattr(event, "worker_id", "") or ""), base or "dim"),
            Text(duration_bar(ms, longest), f"{base} green".strip()),
        ]
        rows.append((event, cells))
    return rows


class EventJson(VerticalScroll):
    """The selected event exactly as it was published, pretty-printed."""

    def compose(self) -> ComposeResult:
        yield Static(id="event-json-body")

    def show(self, event: BaseEvent | None, position: str = "") -> None:
        body = self.query_one("#event-json-body", Static)
        self.border_title = f"{event.event_type} {position}" if event else "event"
        if event is None:
            body.update(Text("No event selected.", "dim"))
            return
        source = event.model_dump_json(indent=2)
        body.update(
            Syntax(source, "json", theme="monokai", background_color="default", word_wrap=True)
        )


# -- layers and preview ------------------------------------------------------------------


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hashable(value: object) -> Hashable | None:
    return value if isinstance(value, int | str) else None


def bbox_size(bbox: object) -> str:
    box = _as_dict(bbox)
    try:
        width = int(box["right"]) - int(box["left"])
        height = int(box["bottom"]) - int(box["top"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"{width}x{height}"


def layer_label(layer: Mapping[str, Any]) -> Text:
    """Name, kind, a hidden marker, opacity when below 255, bbox size."""
    kind = str(layer.get("kind") or "?")
    hidden = layer.get("visible") is False
    text = Text(str(layer.get("name") or "(unnamed)"), "bold" if kind == "group" else "")
    if hidden or layer.get("effective_visible") is False:
        text.stylize("dim")
    text.append(f"  {kind}", "dim cyan")
    if hidden:
        text.append("  hidden", "yellow")
    elif layer.get("effective_visible") is False:
        text.append("  hidden by a group", "dim yellow")
    opacity = layer.get("opacity")
    if isinstance(opacity, int | float) and opacity < 255:
        text.append(f"  opacity {opacity / 255:.0%}", "magenta")
    size = bbox_size(layer.get("bbox"))
    if size:
        text.append(f"  {size}", "dim")
    return text


def document_label(document: Mapping[str, Any], layers: int) -> Text:
    facts = [
        f"{document.get('width', '?')}x{document.get('height', '?')}",
        str(document.get("color_mode") or ""),
        f"{document['depth']}-bit" if "depth" in document else "",
        f"{layers} layers, top first",
    ]
    return Text.assemble(("document", "bold"), "  ", (" · ".join(f for f in facts if f), "dim"))


class LayerTree(Tree[dict[str, Any]]):
    """The layer tree artefact (LayerTree JSON), top layer first as Photoshop lists it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("layers", id=id)
        self.guide_depth = 3

    def load(self, tree: object) -> int:
        """Show the decoded JSON; returns how many layers it shows. Tolerates odd data."""
        data = _as_dict(tree)
        raw = data.get("layers")
        layers = (
            [layer for layer in raw if isinstance(layer, dict)] if isinstance(raw, list) else []
        )
        self.clear()
        self.root.set_label(document_label(_as_dict(data.get("document")), len(layers)))
        ids = {_hashable(layer.get("id")) for layer in layers} - {None}
        children: dict[Hashable | None, list[dict[str, Any]]] = {}
        for layer in layers:
            parent = _hashable(layer.get("parent_id"))
            own = _hashable(layer.get("id"))
            children.setdefault(parent if parent in ids and parent != own else None, []).append(
                layer
            )
        placed: set[int] = set()
        self._add(self.root, children.get(None, []), children, placed)
        orphans = [layer for layer in layers if id(layer) not in placed]  # a parent cycle
        self._add(self.root, orphans, children, placed)
        self.root.expand()
        return len(placed)

    def _add(
        self,
        node: TreeNode[dict[str, Any]],
        layers: list[dict[str, Any]],
        children: dict[Hashable | None, list[dict[str, Any]]],
        placed: set[int],
    ) -> None:
        for layer in reversed(layers):  # the file lists bottom to top
            if id(layer) in placed:
                continue
            placed.add(id(layer))
            own = _hashable(layer.get("id"))
            below = children.get(own, []) if own is not None else []
            if below:
                self._add(node.add(layer_label(layer), layer, expand=True), below, children, placed)
            else:
                node.add_leaf(layer_label(layer), layer)


def layers_summary(manifest: Mapping[str, Any]) -> Text:
    """The manifest's facts about the layers and document, whichever are present."""
    layers, document = _as_dict(manifest.get("layers")), _as_dict(manifest.get("document"))
    facts = []
    if "layers" in layers:
        facts.append(f"{layers['layers']} layers")
    if "visible" in layers:
        facts.append(f"{layers['visible']} visible")
    if "max_depth" in layers:
        facts.append(f"depth {layers['max_depth']}")
    kinds = _as_dict(layers.get("by_kind"))
    if kinds:
        facts.append(", ".join(f"{kind} {count}" for kind, count in kinds.items()))
    fonts = layers.get("fonts")
    if isinstance(fonts, list) and fonts:
        facts.append("fonts " + ", ".join(map(str, fonts)))
    if document:
        size = f"{document.get('width', '?')}x{document.get('height', '?')}"
        facts.append(f"{document.get('format', 'psd')} {size}")
    return Text(" · ".join(facts) or "The manifest has no facts about the layers.", "dim")


def preview_caption(manifest: Mapping[str, Any]) -> Text:
    preview = _as_dict(manifest.get("preview"))
    facts = [f"{preview.get('width', '?')}x{preview.get('height', '?')}"] if preview else []
    facts += [str(preview[k]) for k in ("source", "key") if preview.get(k)]
    return Text(" · ".join(facts) or "The manifest has no preview.", "dim")


def error_text(what: str, key: str, exc: BaseException) -> Text:
    return Text.assemble(
        (f"Could not load the {what}", "bold red"),
        (f" ({key})", "dim"),
        f"\n{type(exc).__name__}: {exc}",
    )


# -- the screen --------------------------------------------------------------------------


class DetailScreen(Screen[None]):
    """One task or workflow, live: ``key`` is a row key of ``state.rows``."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="detail_back"),
        # The tabs are named on screen (and in Help): the footer keeps its room for actions.
        Binding("t", "tab('timeline')", "Timeline", id="detail_timeline", show=False),
        Binding("l", "tab('layers')", "Layers", id="detail_layers", show=False),
        Binding("p", "tab('preview')", "Preview", id="detail_preview", show=False),
        Binding("c", "copy_event", "Copy JSON", id="detail_copy"),
    ]

    DEFAULT_CSS = """
    DetailScreen { layout: vertical; }
    #detail-header { height: auto; max-height: 11; padding: 0 1; background: $boost; }
    #detail-tabs { height: 1fr; }
    #detail-tabs > ContentSwitcher { height: 1fr; }
    #detail-tabs TabPane { height: 1fr; padding: 0; }
    #timeline-split { layout: horizontal; height: 1fr; }
    #timeline { width: auto; max-width: 70%; height: 1fr; }
    #event-json { width: 1fr; height: 1fr; border: round $primary 40%; padding: 0 1; }
    #event-json:focus-within { border: round $primary; }
    DetailScreen.-narrow #timeline-split { layout: vertical; }
    DetailScreen.-narrow #timeline {
        width: 1fr; max-width: 100%; height: 3fr; scrollbar-size-horizontal: 0;
    }
    DetailScreen.-narrow #event-json { width: 1fr; height: 2fr; }
    #timeline-empty { padding: 1 2; }
    .summary { height: auto; padding: 0 1; }
    .status { height: auto; padding: 0 1; }
    #layer-tree { height: 1fr; }
    #preview-image { height: 1fr; }
    """

    def __init__(
        self,
        state: ConsoleState,
        key: str,
        fetch_artefact: Fetcher | None = None,
        activity: Activity | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.state = state
        self.key = key
        self.fetch_artefact = fetch_artefact
        self.activity = activity
        self._activity: list[str] = []
        self.row: Row | None = None
        self.events: list[BaseEvent] = []
        self._correlation = key
        self._seen_version = -1
        self._artefacts_started = False
        self._resolve()
        # Fixed when the screen is built: only a workflow (or an unknown key) has these tabs.
        self.has_artefacts = self.row is None or self.row.kind == "workflow"

    # -- reading the state

    def _resolve(self) -> None:
        """Row and events as the state has them now; an evicted row is rebuilt from its trace."""
        row = self.state.rows.get(self.key)
        self.evicted = row is None
        if row is not None:
            self._correlation = row.correlation_id
        self.events = unique_events(self.state.trace(self._correlation))
        if row is None:
            row = rebuild_row(self.events, self.key) or self.row
        self.row = row

    # -- layout

    def compose(self) -> ComposeResult:
        yield Static(id="detail-header")
        with TabbedContent(id="detail-tabs", initial="tab-timeline"):
            with TabPane("Timeline", id="tab-timeline"):
                yield Static(id="timeline-empty", classes="status")
                with Container(id="timeline-split"):
                    yield Timeline(id="timeline")
                    yield EventJson(id="event-json")
            if self.has_artefacts:
                with TabPane("Layers", id="tab-layers"):
                    yield Static(id="layers-summary", classes="summary")
                    yield Static(id="layers-status", classes="status")
                    yield LayerTree(id="layer-tree")
                with TabPane("Preview", id="tab-preview"):
                    yield Static(id="preview-caption", classes="summary")
                    yield Static(id="preview-status", classes="status")
                    yield ImageView(id="preview-image")
        yield Footer()

    def on_mount(self) -> None:
        if self.has_artefacts:
            self.query_one(LayerTree).display = False
            self.query_one(ImageView).display = False
        self.refresh_from_state(force=True)
        self.query_one(Timeline).focus()
        self.set_interval(REFRESH_SECONDS, self.refresh_from_state)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width < NARROW_BELOW, "-narrow")
        self.query_one(Footer).compact = event.size.width < SIDE_BY_SIDE  # as the main one

    # -- live

    def refresh_from_state(self, force: bool = False) -> None:
        """Redraw from the state when it changed since the last look."""
        activity = self.activity(self.key) if self.activity is not None else []
        if not force and self.state.version == self._seen_version and activity == self._activity:
            return
        self._seen_version, self._activity = self.state.version, activity
        self._resolve()
        header = header_text(self.row, self.key, self.events, self.evicted and bool(self.row))
        header.append_text(links_text(self.key, self.events))
        header.append_text(activity_text(activity))
        self.query_one("#detail-header", Static).update(header)
        self._show_timeline()
        if self.has_artefacts:
            self._show_artefacts()

    def _show_timeline(self) -> None:
        empty = self.query_one("#timeline-empty", Static)
        empty.display = not self.events
        empty.update(Text(f"No events of {self._correlation} are in memory.", "dim"))
        own = self.key if self.row is not None and self.row.kind == "task" else None
        initial = next((e.event_id for e in reversed(self.events) if belongs_to(e, self.key)), None)
        self.query_one(Timeline).show(self.events, own, initial)
        self._show_selected()

    def _show_selected(self) -> None:
        timeline = self.query_one(Timeline)
        position = f"{timeline.cursor_row + 1}/{timeline.row_count}" if timeline.row_count else ""
        self.query_one(EventJson).show(timeline.selected, position)

    @on(DataTable.RowHighlighted, "#timeline")
    def _highlighted(self) -> None:
        self._show_selected()

    # -- artefacts

    def _show_artefacts(self) -> None:
        manifest = self.row.manifest if self.row is not None else None
        if manifest is None:
            self._waiting()
            return
        if self._artefacts_started:
            return
        self._artefacts_started = True
        manifest = _as_dict(manifest)
        self.query_one("#layers-summary", Static).update(layers_summary(manifest))
        self.query_one("#preview-caption", Static).update(preview_caption(manifest))
        tree_key = _as_dict(manifest.get("layers")).get("tree_key")
        preview = _as_dict(manifest.get("preview"))
        image_key = preview.get("key") or preview.get("thumbnail_key")
        self._start_load("layers", tree_key, self._load_layers)
        self._start_load("preview", image_key, self._load_preview)

    def _waiting(self) -> None:
        if self.row is not None and self.row.kind == "task":
            message = "A task has no layers or preview: only a completed PSD workflow has."
        elif self.row is not None and self.row.failed:
            step = f" at step {self.row.step}" if self.row.step else ""
            message = f"The workflow failed{step}: it has no layers or preview."
        else:
            message = "Layers and preview appear when the workflow completes."
        for status in ("#layers-status", "#preview-status"):
            self.query_one(status, Static).update(Text(message, "dim"))

    def _start_load(self, what: str, key: object, load: Callable[[str], Awaitable[None]]) -> None:
        status = self.query_one(f"#{what}-status", Static)
        if not isinstance(key, str) or not key:
            status.update(Text(f"The manifest names no {what} artefact.", "yellow"))
        elif self.fetch_artefact is None:
            status.update(Text(f"No artefact store here: cannot load {key}.", "yellow"))
        else:
            status.update(Text(f"loading {what}…", "dim italic"))
            self.run_worker(load(key), name=f"detail-{what}", group="detail", exit_on_error=False)

    async def _fetch(self, what: str, key: str) -> bytes | None:
        """The artefact's bytes, or None with the error shown in place of it."""
        assert self.fetch_artefact is not None
        try:
            return await self.fetch_artefact(key)
        except Exception as exc:
            self.query_one(f"#{what}-status", Static).update(error_text(what, key, exc))
            return None

    async def _load_layers(self, key: str) -> None:
        data = await self._fetch("layers", key)
        if data is None:
            return
        status = self.query_one("#layers-status", Static)
        try:
            tree = await asyncio.to_thread(json.loads, data)
        except (ValueError, TypeError) as exc:
            status.update(error_text("layer tree", key, exc))
            return
        tree_view = self.query_one(LayerTree)
        shown = tree_view.load(tree)
        tree_view.display = True
        status.display = shown == 0
        status.update(Text("The layer tree artefact lists no layers.", "yellow"))

    async def _load_preview(self, key: str) -> None:
        data = await self._fetch("preview", key)
        if data is None:
            return
        try:
            image = await asyncio.to_thread(decode_image, data)
        except Exception as exc:  # Pillow raises many kinds for a bad image
            self.query_one("#preview-status", Static).update(error_text("preview", key, exc))
            return
        self.query_one("#preview-status", Static).display = False
        view = self.query_one(ImageView)
        view.image = image
        view.display = True

    # -- actions

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        """Switch tabs, moving focus along: focus left in a hidden pane would switch back."""
        tabs = self.query_one(TabbedContent)
        tabs.active = f"tab-{tab}"
        target: Widget = tabs.query_one(Tabs)
        if tab == "timeline":
            target = self.query_one(Timeline)
        elif tab == "layers" and self.query_one(LayerTree).display:
            target = self.query_one(LayerTree)
        target.focus()

    def action_copy_event(self) -> None:
        event = self.query_one(Timeline).selected
        if event is not None:
            self.app.copy_to_clipboard(event.model_dump_json(indent=2))
            self.notify(f"Copied {event.event_type} {event.event_id}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the Layers and Preview keys where there are no such tabs."""
        if action == "tab" and parameters and parameters[0] != "timeline":
            return self.has_artefacts
        return True
