"""Box-wise semantic descriptors (B-SD, after Text4Seg++), with optional semantic bricks.

Each instance is written as a box, then a G x G grid *over the box* (SPEC.md section 3), so
small objects keep their shape. Our grammar (Text4Seg++'s exact syntax is not public)::

    bsd      := "" | instance ("\\n" instance)*
    instance := "<ref>" LABEL "</ref>" box "<seg>" body "</seg>"
    box      := "<box>[" Q ", " Q ", " Q ", " Q "]</box>"
    Q        := decimal integer in 0..1000      # x1, y1, x2, y2; x1 < x2, y1 < y2
    body     := R-RLE body over the box grid     # see rrle.py; labels {LABEL, others}
              | brick body                       # R-RLE over brick tokens, see below

Box quantisation follows the InternVL / Qwen-VL grounding convention of 0..1000 of the image
size: ``x1 = floor(1000 * x1_px / W)``, ``x2 = ceil(1000 * x2_px / W)`` (rows likewise with H)
where pixel boxes are edges with exclusive ``x2``/``y2``. Rounding outward keeps the whole object
inside the box; decoding maps back with ``x1_px = floor(x1 * W / 1000)``,
``x2_px = ceil(x2 * W / 1000)``, and encoding samples the grid from exactly that pixel box, so
encode and decode agree on the geometry.

Semantic bricks (optional compression, ``bricks=True``): the binary box grid (G even) is cut
into 2 x 2 cell bricks; a brick is one token ``<bK>``, ``K`` the hexadecimal digit of its
pattern (bit 0 top-left, bit 1 top-right, bit 2 bottom-left, bit 3 bottom-right cell), so
``<b0>`` is all background and ``<bf>`` all foreground. The (G/2) x (G/2) brick grid is written
with the same R-RLE grammar, brick tokens as labels: ``<b0> *8\\n <b0> *3| <bc> *1| ...``.

An instance list may be empty (GRES with no target): the B-SD text is then empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .geometry import (
    SamplingMethod,
    check_grid_size,
    check_size,
    grid_to_labels,
    labels_to_grid,
    mask_to_box,
)
from .rrle import (
    OTHERS,
    SEG_CLOSE,
    SEG_OPEN,
    LabelResolver,
    Repair,
    RepairKind,
    check_label,
    encode_grid,
    parse_rrle,
)

QUANT = 1000
BRICK = 2  # brick side in grid cells
BRICK_NAMES: tuple[str, ...] = tuple(f"<b{k:x}>" for k in range(1 << (BRICK * BRICK)))
REF_OPEN, REF_CLOSE = "<ref>", "</ref>"
BOX_OPEN, BOX_CLOSE = "<box>", "</box>"
_INSTANCE_RE = re.compile(
    r"<ref>(?P<label>.*?)</ref>\s*(?:<box>(?P<box>.*?)(?:</box>|(?=<seg>)|$))?\s*"
    r"(?:<seg>(?P<body>.*?)(?P<close></seg>|(?=<ref>)|$))?",
    re.DOTALL,
)
# Bit weights of the 2 x 2 cells of a brick, row-major (top-left = 1 ... bottom-right = 8).
_BRICK_WEIGHTS = (1 << np.arange(BRICK * BRICK)).reshape(BRICK, BRICK)


@dataclass
class BoxInstance:
    """One parsed B-SD instance: ``qbox`` in 0..1000 units, ``grid`` ``(G, G)`` bool over it."""

    label: str
    qbox: tuple[int, int, int, int]
    grid: np.ndarray
    repairs: list[Repair] = field(default_factory=list)


@dataclass
class DecodedInstance:
    """One instance at image size: ``mask`` ``(H, W)`` bool, ``box`` the pixel box it lies in."""

    label: str
    mask: np.ndarray
    box: tuple[int, int, int, int]


def quantize_box(box: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel-edge box ``(x1, y1, x2, y2)`` to 0..1000 units, rounded outward."""
    h, w = check_size(size)
    x1, y1, x2, y2 = (int(v) for v in box)
    q = (x1 * QUANT // w, y1 * QUANT // h, -(-x2 * QUANT // w), -(-y2 * QUANT // h))
    return tuple(min(max(v, 0), QUANT) for v in q)  # type: ignore[return-value]


def dequantize_box(qbox: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """0..1000 box to the pixel-edge box it covers (at least one pixel each way)."""
    h, w = check_size(size)
    q1, r1, q2, r2 = (int(v) for v in qbox)
    x1, y1 = min(q1 * w // QUANT, w - 1), min(r1 * h // QUANT, h - 1)
    x2, y2 = min(-(-q2 * w // QUANT), w), min(-(-r2 * h // QUANT), h)
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def grid_to_bricks(grid: np.ndarray) -> np.ndarray:
    """``(G, G)`` bool grid (G even) to a ``(G/2, G/2)`` grid of brick indices 0..15."""
    g = grid.shape[0]
    blocks = grid.astype(np.int64).reshape(g // BRICK, BRICK, g // BRICK, BRICK)
    return np.einsum("aibj,ij->ab", blocks, _BRICK_WEIGHTS)


def bricks_to_grid(bricks: np.ndarray) -> np.ndarray:
    """Inverse of :func:`grid_to_bricks`: brick indices to the ``(G, G)`` bool grid."""
    bits = (bricks[:, None, :, None] & _BRICK_WEIGHTS[None, :, None, :]) != 0
    n = bricks.shape[0] * BRICK
    return bits.reshape(n, n)


def check_brick_grid(grid: int) -> None:
    """ValueError unless ``grid`` splits into whole bricks."""
    if grid % BRICK:
        raise ValueError(f"semantic bricks need an even grid (multiple of {BRICK}), got {grid}")


def encode_instance(
    mask: np.ndarray,
    label: str,
    grid: int = 16,
    bricks: bool = False,
    method: SamplingMethod = "center",
) -> str:
    """One instance ``(H, W)`` bool mask as a ``<ref><box><seg>`` triple; "" for an empty mask."""
    check_label(label)
    grid = check_grid_size(grid)
    if bricks:
        check_brick_grid(grid)
    box = mask_to_box(mask)
    if box is None:
        return ""
    qbox = quantize_box(box, mask.shape)
    x1, y1, x2, y2 = dequantize_box(qbox, mask.shape)
    cells = labels_to_grid((mask[y1:y2, x1:x2] != 0).astype(np.int64), grid, method, 2)
    if bricks:
        body = encode_grid(grid_to_bricks(cells), BRICK_NAMES)
    else:
        body = encode_grid(cells, (OTHERS, label))
    q = ", ".join(str(v) for v in qbox)
    return f"{REF_OPEN}{label}{REF_CLOSE}{BOX_OPEN}[{q}]{BOX_CLOSE}{SEG_OPEN}{body}{SEG_CLOSE}"


def encode_instances(
    masks: Sequence[np.ndarray],
    labels: Sequence[str] | str,
    grid: int = 16,
    bricks: bool = False,
    method: SamplingMethod = "center",
) -> str:
    """Several instance masks (one label, or one label per mask) as B-SD triples joined by "\\n".

    Empty masks are skipped; no instance at all gives "".
    """
    if isinstance(labels, str):
        labels = [labels] * len(masks)
    if len(labels) != len(masks):
        raise ValueError(f"got {len(masks)} masks but {len(labels)} labels")
    parts = [encode_instance(m, lab, grid, bricks, method) for m, lab in zip(masks, labels)]
    return "\n".join(p for p in parts if p)


def _parse_qbox(text: str | None) -> tuple[tuple[int, int, int, int] | None, list[str]]:
    """Read four ints in 0..1000; return the repaired box (or None) and what was fixed."""
    # ASCII digits only; more than 4 digits is above 1000 anyway (and int() refuses > 4300).
    numbers = [int(v) if len(v) <= 4 else QUANT + 1 for v in re.findall(r"[0-9]+", text or "")]
    if len(numbers) < 4:
        return None, []
    fixes = []
    if len(numbers) > 4:
        fixes.append(f"{len(numbers)} numbers, kept 4")
    q = [min(v, QUANT) for v in numbers[:4]]
    if q != numbers[:4]:
        fixes.append("clipped to 1000")
    for a, b in ((0, 2), (1, 3)):
        if q[a] > q[b]:
            q[a], q[b] = q[b], q[a]
            fixes.append("corners swapped")
        if q[a] == q[b]:
            q[a], q[b] = (q[a], q[a] + 1) if q[a] < QUANT else (q[a] - 1, q[a])
            fixes.append("zero width widened")
    return (q[0], q[1], q[2], q[3]), fixes


def parse_bsd(
    text: str, labels: Sequence[str], grid: int = 16, bricks: bool | None = None
) -> tuple[list[BoxInstance], list[Repair]]:
    """Parse B-SD triples. ``labels``: the goal's labels (``ref`` text is matched against them).

    ``bricks=None`` detects brick bodies by their ``<bK>`` tokens. Never raises on model output:
    a triple without a readable box or label is dropped and reported; bodies are repaired row by
    row as in :func:`~text4seg_ros.descriptors.rrle.parse_rrle`.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    labels = [check_label(lab) for lab in labels]
    if not labels:
        raise ValueError("labels must name at least one label")
    grid = check_grid_size(grid)
    resolver = LabelResolver(labels)
    instances: list[BoxInstance] = []
    repairs: list[Repair] = []
    for k, match in enumerate(_INSTANCE_RE.finditer(text)):
        ref = match["label"].strip()
        index, kind = resolver.resolve(ref)
        if kind is RepairKind.UNKNOWN_LABEL and len(labels) > 1:
            repairs.append(Repair(RepairKind.DROPPED_INSTANCE, None, f"#{k}: unknown ref {ref!r}"))
            continue
        qbox, fixes = _parse_qbox(match["box"])
        if qbox is None or match["body"] is None:
            what = "box" if qbox is None else "<seg> body"
            repairs.append(Repair(RepairKind.DROPPED_INSTANCE, None, f"#{k}: no readable {what}"))
            continue
        own: list[Repair] = []
        if kind is not None:
            own.append(Repair(kind, None, f"#{k}: ref {ref!r} read as {labels[index]!r}"))
        if fixes:
            own.append(Repair(RepairKind.BAD_BOX, None, f"#{k}: " + ", ".join(fixes)))
        if not match["close"]:
            own.append(Repair(RepairKind.MISSING_CLOSE, None, f"#{k}: no </seg>"))
        body = match["body"]
        use_bricks = ("<b" in body) if bricks is None else bricks
        if use_bricks and grid % BRICK == 0:
            parsed = parse_rrle(body, BRICK_NAMES, grid // BRICK)
            cells = bricks_to_grid(parsed.grid)
        else:
            parsed = parse_rrle(body, (OTHERS, labels[index]), grid)
            cells = parsed.grid != 0
        own.extend(parsed.repairs)
        instances.append(BoxInstance(labels[index], qbox, cells, own))
        repairs.extend(own)
    return instances, repairs


def decode_instances(
    text: str, labels: Sequence[str], size: tuple[int, int], grid: int = 16
) -> list[DecodedInstance]:
    """B-SD text to per-instance ``(H, W)`` bool masks at image ``size = (H, W)``."""
    size = check_size(size)
    out = []
    for inst in parse_bsd(text, labels, grid)[0]:
        x1, y1, x2, y2 = dequantize_box(inst.qbox, size)
        mask = np.zeros(size, dtype=bool)
        mask[y1:y2, x1:x2] = grid_to_labels(inst.grid, (y2 - y1, x2 - x1))
        out.append(DecodedInstance(inst.label, mask, (x1, y1, x2, y2)))
    return out
