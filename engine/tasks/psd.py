"""The PSD steps as command tasks: read the input, call the service, store artefacts.

Each step is a thin wrapper and returns a small result (keys and facts, never
image bytes), so results stay small in the KV bucket. The service runs in a
thread (it renders in a child process under memory and time limits), so the
worker's event loop keeps acking and heartbeating meanwhile. A PsdError is
deterministic: it fails the step at once, without retries.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Any

from engine import storage
from engine.app import broker
from engine.services import psd
from engine.services.limits import Limits

INPUT_CACHE_BYTES = 256 * 1024 * 1024
_inputs: OrderedDict[str, bytes] = OrderedDict()


def _limits() -> Limits:
    return broker.settings.psd


async def _input(key: str) -> bytes:
    """The input's bytes; kept in a small LRU because the steps of a workflow all read it.

    Keys are content addresses, so a cached input can never be stale.
    """
    data = _inputs.get(key)
    if data is not None:
        _inputs.move_to_end(key)
        return data
    data = await storage.get_input(broker, key)
    _inputs[key] = data
    while sum(map(len, _inputs.values())) > INPUT_CACHE_BYTES and len(_inputs) > 1:
        _inputs.popitem(last=False)
    return data


@broker.task(task_name="psd.validate")
async def validate(workflow_id: str, input_key: str) -> dict[str, Any]:
    """Header facts, refusing what the limits forbid before anything is decoded."""
    data = await _input(input_key)
    document = await asyncio.to_thread(psd.inspect, data, _limits())
    return document.model_dump(mode="json")


@broker.task(task_name="psd.parse")
async def parse_layers(
    workflow_id: str, input_key: str, document: dict[str, Any]
) -> dict[str, Any]:
    """The layer tree, stored whole as layers.json; the result only summarises it."""
    data = await _input(input_key)
    tree = await asyncio.to_thread(psd.parse, data, _limits())
    if tree.document.layer_count != document["layer_count"]:
        raise psd.PsdError(
            "corrupt",
            f"validate saw {document['layer_count']} layers, parse {tree.document.layer_count}",
        )
    key = await storage.put_json(broker, workflow_id, "layers.json", tree.model_dump(mode="json"))
    kinds = Counter(layer.kind for layer in tree.layers)
    return {
        "tree_key": key,
        "layers": len(tree.layers),
        "by_kind": dict(sorted(kinds.items())),
        "visible": sum(layer.effective_visible for layer in tree.layers),
        "max_depth": max((layer.depth for layer in tree.layers), default=-1) + 1,
        "top_level": [layer.name for layer in tree.layers if layer.parent_id is None],
        "fonts": sorted({run.font for layer in tree.layers for run in layer.text_runs if run.font}),
    }


@broker.task(task_name="psd.preview")
async def preview(workflow_id: str, input_key: str, document: dict[str, Any]) -> dict[str, Any]:
    """The whole document as PNG plus a thumbnail, checked against the header's size."""
    data = await _input(input_key)
    image = await asyncio.to_thread(psd.render_preview, data, _limits())
    if (image.width, image.height) != (document["width"], document["height"]):
        raise psd.PsdError(
            "render_failed",
            f"preview is {image.width}x{image.height}, "
            f"the document {document['width']}x{document['height']}",
        )
    key, thumbnail_key = await asyncio.gather(
        storage.put_artefact(broker, workflow_id, "preview.png", image.png),
        storage.put_artefact(broker, workflow_id, "thumbnail.png", image.thumbnail_png),
    )
    return {
        "key": key,
        "thumbnail_key": thumbnail_key,
        "width": image.width,
        "height": image.height,
        "source": image.source,
        "bytes": len(image.png),
    }


@broker.task(task_name="psd.export_layers")
async def export_layers(workflow_id: str, input_key: str) -> dict[str, Any]:
    """One PNG per visible pixel layer, stored under layers/, with its placement."""
    data = await _input(input_key)
    images = await asyncio.to_thread(psd.export_layers, data, _limits())
    keys = await asyncio.gather(
        *(storage.put_artefact(broker, workflow_id, f"layers/{i.filename}", i.png) for i in images)
    )
    exported = [
        {
            "layer_id": image.layer_id,
            "name": image.name,
            "key": key,
            "left": image.left,
            "top": image.top,
            "width": image.width,
            "height": image.height,
        }
        for image, key in zip(images, keys, strict=True)
    ]
    return {"layers": exported, "count": len(exported)}
