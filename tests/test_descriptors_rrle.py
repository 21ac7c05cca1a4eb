"""R-RLE / I-SD codec: official format, round trips, and row-wise repair of bad model output."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import read_mask_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from text4seg_ros.descriptors import (
    RepairKind,
    decode_labels,
    decode_mask,
    encode_labels,
    encode_mask,
    grid_to_mask,
    mask_to_grid,
    parse_rrle,
)
from text4seg_ros.descriptors.rrle import encode_grid

SPEC_EXAMPLE = "others *4\n others *1| cup *2| others *1\n cup *4\n others *4\n"
SPEC_GRID = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])


def official_encode(mask: np.ndarray, label: str, grid: int) -> str:
    """The official recipe, written naively from SPEC 1-2: PIL nearest resize, then R-RLE."""
    small = (
        np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((grid, grid), Image.NEAREST))
        > 0
    )
    rows = []
    for row in small:
        words = [label if v else "others" for v in row]
        runs, start = [], 0
        for i in range(1, len(words) + 1):
            if i == len(words) or words[i] != words[start]:
                runs.append(f"{words[start]} *{i - start}")
                start = i
        rows.append("| ".join(runs))
    return "\n ".join(rows) + "\n"


def test_spec_example_encodes_byte_for_byte() -> None:
    mask = grid_to_mask(SPEC_GRID, (4, 4))
    assert encode_mask(mask, "cup", 4) == SPEC_EXAMPLE
    answer = f"Sure, here is the segmentation mask for 'cup':\n<seg>{SPEC_EXAMPLE}</seg>"
    np.testing.assert_array_equal(decode_mask(answer, "cup", (4, 4), 4), mask)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 400), st.integers(1, 400), st.integers(8, 64), st.integers(0, 2**32 - 1))
def test_encode_mask_equals_official_recipe(h: int, w: int, grid: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    mask[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
    assert encode_mask(mask, "the red mug", grid) == official_encode(mask, "the red mug", grid)


@st.composite
def label_grids(draw):
    grid = draw(st.integers(8, 64))
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Blocky grids (long runs) and noisy grids (many short runs) both occur.
    cells = rng.integers(0, k, (grid, grid // 4 + 1)).repeat(4, axis=1)[:, :grid]
    if draw(st.booleans()):
        cells = rng.integers(0, k, (grid, grid))
    return cells, ["others"] + [f"class {i}" for i in range(1, k)]


@settings(max_examples=150, deadline=None)
@given(label_grids())
def test_labels_round_trip_without_repairs(case) -> None:
    cells, names = case
    text = encode_labels(cells, names)
    parsed = parse_rrle(f"<seg>{text}</seg>", names, cells.shape[0])
    assert parsed.valid, parsed.repairs
    np.testing.assert_array_equal(parsed.grid, cells)
    np.testing.assert_array_equal(decode_labels(text, names, cells.shape[0]), cells)
    assert encode_labels(parsed.grid, names) == text
    rows = text[:-1].split("\n ")
    assert len(rows) == cells.shape[0] and text.endswith("\n")
    for row in rows:
        assert sum(int(run.rsplit("*", 1)[1]) for run in row.split("| ")) == cells.shape[0]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(1, 4000),
    st.integers(8, 64),
    st.integers(0, 2**32 - 1),
)
def test_mask_round_trip_any_size(h: int, w: int, grid: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = rng.random((grid, grid)) < 0.4
    mask = grid_to_mask(cells, (h, w))
    decoded = decode_mask(encode_mask(mask, "cup", grid), "cup", (h, w), grid)
    assert decoded.shape == (h, w) and decoded.dtype == bool
    np.testing.assert_array_equal(decoded, grid_to_mask(mask_to_grid(mask, grid), (h, w)))
    if h >= 2 * grid and w >= 2 * grid:  # every cell then owns its own centre sample
        np.testing.assert_array_equal(decoded, mask)


def test_encode_mask_sampling_method() -> None:
    # A 3 x 3 blob in the corner of each 8 x 8 cell: the centre sample misses it, the area vote
    # too (9 of 64 pixels); a 6 x 6 blob covers the majority of the cell but not its centre.
    mask = np.zeros((32, 32), bool)
    mask[0:6, 0:6] = True  # cell (0, 0): 36 of 64 pixels, centre pixel (4, 4) included
    mask[8:14, 26:32] = True  # cell (1, 3): 36 of 64 pixels, centre (12, 28) included
    mask[16:22, 16:22] = True
    mask[20, 20] = False  # cell (2, 2): majority set, the centre sample (20, 20) is not
    area = encode_mask(mask, "cup", 4, method="area")
    center = encode_mask(mask, "cup", 4)
    assert center == encode_mask(mask, "cup", 4, method="center")
    assert area == encode_labels(mask_to_grid(mask, 4, "area").astype(np.int64), ["others", "cup"])
    assert center == encode_labels(mask_to_grid(mask, 4).astype(np.int64), ["others", "cup"])
    assert area.splitlines()[2].strip() == "others *2| cup *1| others *1"
    assert center.splitlines()[2].strip() == "others *4"
    with pytest.raises(ValueError, match="method"):
        encode_mask(mask, "cup", 4, method="bilinear")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(1, 1), (3000, 4000), (4000, 3000), (1, 4000), (480, 854)])
def test_extreme_sizes(size: tuple[int, int]) -> None:
    mask = np.zeros(size, bool)
    mask[: size[0] // 2 + 1, : size[1] // 3 + 1] = True
    text = encode_mask(mask, "box", 16)
    assert decode_mask(text, "box", size, 16).shape == size


def test_plain_isd_decodes_like_rrle() -> None:
    plain = encode_grid(SPEC_GRID, ("others", "cup"), rle=False)
    assert plain.startswith("others| others| others| others\n others| cup| cup| others\n")
    parsed = parse_rrle(plain, ("others", "cup"), 4)
    assert parsed.valid
    np.testing.assert_array_equal(parsed.grid, SPEC_GRID)


def test_all_foreground_decodes_as_foreground() -> None:
    # The official decoder maps labels by first appearance and returns an empty mask here.
    text = "\n ".join(["cup *4"] * 4) + "\n"
    assert decode_mask(text, "cup", (8, 8), 4).all()


def test_answer_text_without_markers() -> None:
    text = "Sure, here is the segmentation mask for 'cup':\n" + SPEC_EXAMPLE
    parsed = parse_rrle(text, ("others", "cup"), 4)
    assert parsed.valid
    np.testing.assert_array_equal(parsed.grid, SPEC_GRID)


def kinds(text: str, grid: int = 4) -> tuple[np.ndarray, list[RepairKind]]:
    parsed = parse_rrle(text, ("others", "cup"), grid)
    return parsed.grid, [r.kind for r in parsed.repairs]


def test_short_row_is_repaired_inside_its_row_only() -> None:
    text = "<seg>others *4\n others *1| cup *2\n cup *4\n others *4\n</seg>"
    grid, found = kinds(text)
    assert found == [RepairKind.SHORT_ROW]
    np.testing.assert_array_equal(grid, [[0, 0, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])


def test_long_row_is_truncated_and_later_rows_do_not_shift() -> None:
    text = "<seg>others *4\n others *1| cup *5\n cup *4\n others *4\n</seg>"
    grid, found = kinds(text)
    assert found == [RepairKind.LONG_ROW]
    np.testing.assert_array_equal(grid[2:], SPEC_GRID[2:])


def test_bad_count_is_inferred_from_the_row() -> None:
    grid, found = kinds(
        "<seg>others *4\n others *1| cup *x| others *1\n cup *4\n others *4\n</seg>"
    )
    assert found == [RepairKind.BAD_COUNT]
    np.testing.assert_array_equal(grid, SPEC_GRID)
    grid, found = kinds("<seg>others *0| cup *4\n others *4\n cup *4\n others *4\n</seg>")
    assert RepairKind.BAD_COUNT in found and grid[0].tolist() == [1, 1, 1, 1]


def test_unknown_and_fuzzy_labels() -> None:
    grid, found = kinds(
        "<seg>others *4\n others *1| Cup *2| others *1\n cupp *4\n zebra *4\n</seg>"
    )
    assert found == [RepairKind.FUZZY_LABEL, RepairKind.FUZZY_LABEL, RepairKind.UNKNOWN_LABEL]
    np.testing.assert_array_equal(grid, SPEC_GRID)


def test_cut_off_mid_row_and_missing_close() -> None:
    grid, found = kinds("<seg>others *4\n others *1| cup *2| oth")
    assert RepairKind.MISSING_CLOSE in found and RepairKind.MISSING_ROWS in found
    np.testing.assert_array_equal(grid[:2], SPEC_GRID[:2])
    assert not grid[2:].any()


def test_missing_extra_and_blank_rows() -> None:
    grid, found = kinds("<seg>others *4\n\n others *1| cup *2| others *1\n</seg>")
    assert found == [RepairKind.BLANK_LINE, RepairKind.MISSING_ROWS]
    np.testing.assert_array_equal(grid[:2], SPEC_GRID[:2])
    grid, found = kinds("<seg>" + SPEC_EXAMPLE + " cup *4\n cup *4\n</seg>")
    assert found == [RepairKind.EXTRA_ROWS]
    np.testing.assert_array_equal(grid, SPEC_GRID)


def test_no_descriptor_and_huge_counts() -> None:
    grid, found = kinds("I cannot see a cup.")
    assert found == [RepairKind.NO_BODY] and not grid.any()
    grid, found = kinds("<seg>cup *99999999999999999999\n cup *4\n cup *4\n cup *4\n</seg>")
    assert found == [RepairKind.LONG_ROW] and grid.all()


def test_non_ascii_and_endless_digits_are_repaired_not_raised() -> None:
    # str.isdigit() accepts "²" and int() refuses > 4300 digits: both once escaped as ValueError.
    grid, found = kinds("<seg>others *²\n others *4\n others *4\n others *4\n</seg>")
    assert found == [RepairKind.BAD_COUNT] and not grid.any()
    grid, found = kinds("<seg>cup *" + "9" * 5000 + "\n cup *4\n cup *4\n cup *4\n</seg>")
    assert found == [RepairKind.LONG_ROW] and grid.all()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text: str) -> None:
    mask = decode_mask(text, "cup", (9, 7), 4)
    assert mask.shape == (9, 7) and mask.dtype == bool


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SPEC_EXAMPLE)), st.integers(0, 8), st.text(max_size=6))
def test_mutated_descriptor_never_raises(pos: int, cut: int, insert: str) -> None:
    text = "<seg>" + SPEC_EXAMPLE[:pos] + insert + SPEC_EXAMPLE[pos + cut :] + "</seg>"
    parsed = parse_rrle(text, ("others", "cup"), 4)
    assert parsed.grid.shape == (4, 4)
    assert parsed.grid.min() >= 0 and parsed.grid.max() <= 1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: encode_mask(np.zeros((4, 4)), "others", 4), ValueError, "background"),
        (lambda: encode_mask(np.zeros((4, 4)), "a|b", 4), ValueError, "must not contain"),
        (lambda: encode_mask(np.zeros((4, 4)), " cup", 4), ValueError, "blanks"),
        (lambda: encode_mask(np.zeros((4, 4)), 3, 4), TypeError, "str"),
        (lambda: encode_mask(np.zeros(4), "cup", 4), ValueError, "2-D"),
        (lambda: decode_mask(b"cup *4", "cup", (4, 4), 4), TypeError, "str"),
        (lambda: decode_mask("others *4", "others", (4, 4), 4), ValueError, "background"),
        (lambda: decode_mask("", "cup", (4, 4), 0), ValueError, "grid"),
        (lambda: encode_labels(np.zeros((4, 4), int), ["cup"]), ValueError, "others"),
        (lambda: encode_labels(np.full((4, 4), 3), ["others", "cup"]), ValueError, "indices"),
        (lambda: encode_labels(np.zeros((4, 5), int), ["others", "cup"]), ValueError, "square"),
        (lambda: decode_labels("", ["others", "cup", "cup"]), ValueError, "unique"),
    ],
)
def test_argument_errors_say_what_is_allowed(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_real_masks_reach_the_published_oracle(data_dir) -> None:
    # A perfect 16 x 16 centre-sampled I-SD reaches cIoU ~0.75 on the COCO tiny instances.
    inter = union = 0
    for path in sorted((data_dir / "coco_tiny16" / "masks_derived").glob("*.png")):
        mask = read_mask_png(path)
        decoded = decode_mask(encode_mask(mask, "thing", 16), "thing", mask.shape, 16)
        inter += np.count_nonzero(decoded & mask)
        union += np.count_nonzero(decoded | mask)
    assert 0.72 < inter / union < 0.78
