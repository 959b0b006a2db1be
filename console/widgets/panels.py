"""The main screen's panels and where they go: side by side when the terminal is wide, the
system figures under the task flow (or out of the way) when it is not, each panel toggled by
its number key and the focused one zoomed to the whole screen with ``z``.

The task flow is what a person reads; at 100 columns the figures' fixed 70 cells used to
squeeze it to a time and half a name. Here they yield instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Footer

from console.state import ConsoleState
from console.widgets.consumers import ConsumerLag
from console.widgets.failures import Failures
from console.widgets.streams import StreamHealth
from console.widgets.task_flow import TaskFlow
from console.widgets.workers import Workers

SIDE_BY_SIDE = 150  # columns from which the system figures keep a column of their own
BELOW = 40  # rows from which, narrower, they go under the task flow; else hidden until asked


@dataclass(frozen=True)
class PanelSpec:
    key: str
    id: str  # the panel widget's id
    title: str
    system: bool  # one of the figures' column
    keys_to: str  # the id of the widget that takes its keys (a list, or the panel itself)


PANELS = (
    PanelSpec("1", "task-flow", "Task flow", False, "task-rows"),
    PanelSpec("2", "failures", "Failures", False, "failure-rows"),
    PanelSpec("3", "stream-health", "Stream health", True, "stream-health"),
    PanelSpec("4", "consumer-lag", "Consumer lag", True, "consumer-lag"),
    PanelSpec("5", "workers", "Workers", True, "workers"),
)
_GROUP = Binding.Group("Panels ", compact=True)  # the space: a compact footer runs on


def binding_id(spec: PanelSpec) -> str:
    return f"panel_{spec.id.replace('-', '_')}"


class Panels(Widget):
    """Holds the five panels; its bindings work wherever the focus is among them."""

    DEFAULT_CSS = "Panels { height: 1fr; layout: horizontal; }"
    BINDINGS = [
        *(
            Binding(s.key, f"toggle_panel('{s.id}')", s.title, id=binding_id(s), group=_GROUP)
            for s in PANELS
        ),
        Binding("z", "zoom", "Zoom", id="zoom"),
        Binding("z", "unzoom", "Unzoom", id="zoom"),  # the same id: remapped together
    ]

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="main")
        self.state = state
        self.chosen: dict[str, bool] = {}  # a person's toggles; the others follow the size
        self.zoomed: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="left"):
            yield TaskFlow(self.state)
            yield Failures(self.state)
        right = VerticalScroll(id="right")
        right.can_focus = False  # its panels take the focus, one by one
        with right:
            for panel in (StreamHealth(self.state), ConsumerLag(self.state), Workers(self.state)):
                panel.can_focus = True  # so Tab reaches it and z can zoom it
                yield panel

    # -- what is shown ------------------------------------------------------------

    @property
    def narrow(self) -> bool:
        return self.app.size.width < SIDE_BY_SIDE

    def shown(self, spec: PanelSpec) -> bool:
        """A person's choice if they made one; else the system figures only where there is room."""
        if spec.id in self.chosen:
            return self.chosen[spec.id]
        return not spec.system or not self.narrow or self.app.size.height >= BELOW

    def states(self) -> dict[str, str]:
        """By binding id: shown, hidden or zoomed (the help screen lists them)."""
        return {
            binding_id(s): "zoomed" if self.zoomed == s.id else
            ("shown" if self.shown(s) else "hidden")
            for s in PANELS
        }  # fmt: skip

    def place(self) -> None:
        """Apply the size, the toggles and the zoom to the widgets."""
        self.set_class(self.narrow, "narrow")
        for footer in self.screen.query(Footer):
            footer.compact = self.narrow  # every key still fits at 80 columns
        for spec in PANELS:
            visible = self.shown(spec) if self.zoomed is None else self.zoomed == spec.id
            self.query_one(f"#{spec.id}").display = visible
        system = [s for s in PANELS if s.system]
        if self.zoomed is None:
            left = any(self.shown(s) for s in PANELS if not s.system)
            right = any(self.shown(s) for s in system)
        else:
            left = not any(s.id == self.zoomed for s in system)
            right = not left
        self.query_one("#left").display = left
        self.query_one("#right").display = right
        self.set_class(left and not right, "left-only")
        self.set_class(right and not left, "right-only")
        # The way back, on the bottom line of the first panel shown.
        hidden = [f"{s.key} {s.title}" for s in PANELS if not self.shown(s)]
        hint = "z: back to all panels" if self.zoomed else ", ".join(hidden)
        if hint and not self.zoomed:
            hint = f"hidden: {hint}"
        first = next(s for s in PANELS if self.query_one(f"#{s.id}").display)
        for spec in PANELS:
            self.query_one(f"#{spec.id}").border_subtitle = hint if spec is first else ""
        self.refresh_bindings()
        self._keep_focus()

    def _keep_focus(self) -> None:
        """The focus never stays on a hidden panel: it moves to the first one shown."""
        focused = self.screen.focused
        if focused is not None and self not in focused.ancestors:
            return  # the filter field, say: not ours to move
        current = self._panel_of(focused)
        if current is not None and current.display and getattr(current.parent, "display", False):
            return
        for spec in PANELS:
            panel = self.query_one(f"#{spec.id}")
            if panel.display and panel.parent is not None and panel.parent.display:
                self.query_one(f"#{spec.keys_to}").focus()
                return

    def _panel_of(self, widget: Widget | None) -> Widget | None:
        """The panel holding ``widget`` (a panel itself, or its list)."""
        ids = {s.id for s in PANELS}
        node = widget
        while node is not None and node is not self:
            if node.id in ids and isinstance(node, Widget):
                return node
            node = node.parent if isinstance(node.parent, Widget) else None
        return None

    def on_mount(self) -> None:
        self.place()

    def on_resize(self, event: events.Resize) -> None:
        self.place()

    # -- keys ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "zoom":
            return self.zoomed is None
        if action == "unzoom":
            return self.zoomed is not None
        return True

    def action_toggle_panel(self, panel_id: str) -> None:
        spec = next(s for s in PANELS if s.id == panel_id)
        self.zoomed = None
        if self.shown(spec) and not any(self.shown(s) for s in PANELS if s is not spec):
            self.notify("the last panel shown stays", severity="warning", timeout=3)
            return
        self.chosen[panel_id] = not self.shown(spec)
        if self.chosen[panel_id]:
            self.query_one(f"#{panel_id}").display = True
        self.place()
        if self.chosen[panel_id]:  # shown: the keys go there, so z zooms it next
            self.query_one(f"#{spec.keys_to}").focus()

    def action_zoom(self) -> None:
        panel = self._panel_of(self.screen.focused)
        if panel is not None and panel.id is not None:
            self.zoomed = panel.id
            self.place()

    def action_unzoom(self) -> None:
        self.zoomed = None
        self.place()
