"""The one overlay renderer: masks tinted over a camera frame, boxes outlined, a legend.

Used by ``text4seg-segment`` (one overlay PNG per goal) and by the node's ``overlay`` topic
(all goals of a frame). ROS-free: numpy and PIL only.

Frames are ``(H, W, 3)`` uint8 RGB. Masks are ``(H, W)`` bool in the same pixel frame; label
maps ``(H, W)`` integer class indices (0 = ``others``, never tinted). Boxes are pixel edges
``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive, outlined 2 px wide inside their edges.
The legend (a colour swatch and a name per entry) is a strip *below* the frame, so the frame's
own pixels are never covered; it is drawn by default when a label map is shown, since its
class colours mean nothing without names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]

# Tint and outline colours (RGB), cycled; distinct on photos and on each other.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 200, 255),
    (255, 210, 0),
    (120, 255, 90),
    (230, 90, 255),
    (255, 140, 40),
    (0, 220, 170),
    (255, 110, 180),
)
TINT_ALPHA = 0.45  # share of the tint colour in a masked pixel
LEGEND_BACKGROUND = (24, 24, 24)
LEGEND_TEXT = (255, 255, 255)
_PAD = 4  # pixels around legend entries
_SWATCH = 10  # side of a legend colour swatch, pixels


def colour(index: int) -> tuple[int, int, int]:
    """Palette colour ``index`` (cycled)."""
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Layer:
    """What to draw for one goal.

    ``mask`` ``(H, W)`` bool is tinted in palette colour ``colour``; with ``label_map`` the
    classes are tinted instead, class ``k >= 1`` in palette colour ``k - 1``, named by
    ``class_names[k]`` (``class_names[0]`` is ``others``). ``boxes`` are outlined, box ``i``
    in palette colour ``colour + i`` (one colour per instance). ``label`` names the layer in
    the legend (empty: not listed).
    """

    mask: np.ndarray
    colour: int = 0
    boxes: tuple[Box, ...] = ()
    label: str = ""
    label_map: np.ndarray | None = None
    class_names: tuple[str, ...] = ()


def result_layer(result: Any, colour_index: int = 0) -> Layer:
    """The layer of a Segmenter result (:class:`~text4seg_ros.model.types.GoalResult`): its
    mask or label map, and its instances' boxes (B-SD) or else its own box."""
    boxes = [inst.box for inst in result.instances if inst.box is not None]
    if not boxes and result.box is not None:
        boxes = [result.box]
    label_map = result.label_map
    return Layer(
        mask=np.asarray(result.mask, dtype=bool),
        colour=colour_index,
        boxes=tuple(tuple(int(v) for v in b) for b in boxes),
        label=result.goal.text if label_map is None else "",
        label_map=label_map,
        class_names=tuple(result.labels) if label_map is not None else (),
    )


def _tint(out: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> None:
    out[mask] = (1.0 - TINT_ALPHA) * out[mask] + TINT_ALPHA * np.asarray(rgb, dtype=np.float32)


def legend_entries(layers: Sequence[Layer]) -> list[tuple[tuple[int, int, int], str]]:
    """``(colour, name)`` per named layer and per label-map class (``others`` excluded)."""
    entries: list[tuple[tuple[int, int, int], str]] = []
    for layer in layers:
        if layer.label_map is not None:
            names = layer.class_names
            entries += [(colour(k - 1), names[k]) for k in range(1, len(names))]
        elif layer.label:
            entries.append((colour(layer.colour), layer.label))
    return entries


def render_legend(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> np.ndarray:
    """A ``(h, width, 3)`` uint8 strip: swatch and name per entry, wrapped into rows."""
    font = ImageFont.load_default()
    line = max(_SWATCH, int(font.getbbox("Ag")[3])) + _PAD
    # place entries left to right, wrapping when the next one would pass the right edge
    places: list[tuple[int, int]] = []
    x, y = _PAD, _PAD
    for _, name in entries:
        w = _SWATCH + _PAD + int(font.getlength(name)) + 2 * _PAD
        if x > _PAD and x + w > width:
            x, y = _PAD, y + line
        places.append((x, y))
        x += w
    strip = Image.new("RGB", (width, y + line + _PAD if entries else 0), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for (rgb, name), (x, y) in zip(entries, places):
        draw.rectangle([x, y, x + _SWATCH - 1, y + _SWATCH - 1], fill=rgb)
        draw.text((x + _SWATCH + _PAD, y - 1), name, fill=LEGEND_TEXT, font=font)
    return np.asarray(strip)


def render_overlay(
    image: np.ndarray, layers: Sequence[Layer], legend: bool | None = None
) -> np.ndarray:
    """The frame with every layer drawn: ``(H, W, 3)`` uint8, or ``(H + h, W, 3)`` with the
    legend strip below it.

    ``legend``: ``None`` draws it when a layer has a label map, ``True`` whenever there is an
    entry, ``False`` never. Masks that do not match the frame raise ValueError.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {getattr(image, 'shape', image)}")
    size = image.shape[:2]
    out = image.astype(np.float32)
    for layer in layers:
        if layer.mask.shape != size:
            raise ValueError(f"mask {layer.mask.shape} does not match image {size}")
        if layer.label_map is not None:
            if layer.label_map.shape != size:
                raise ValueError(f"label map {layer.label_map.shape} does not match image {size}")
            for k in range(1, int(layer.label_map.max(initial=0)) + 1):
                _tint(out, layer.label_map == k, colour(k - 1))
        else:
            _tint(out, layer.mask, colour(layer.colour))
    canvas = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for layer in layers:
        for i, (x1, y1, x2, y2) in enumerate(layer.boxes):
            if x2 <= x1 or y2 <= y1:
                continue  # an empty box has no pixel to outline
            rgb = colour(layer.colour + i)
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=rgb, width=2)
    frame = np.asarray(canvas)
    entries = legend_entries(layers)
    show = any(layer.label_map is not None for layer in layers) if legend is None else legend
    if not show or not entries:
        return frame
    return np.concatenate([frame, render_legend(entries, frame.shape[1])], axis=0)
