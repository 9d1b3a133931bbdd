"""Oriented boxes and contours on hand-made instances of known geometry."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pasta_ros.core.grasp_geometry import contour_polygon, oriented_box


def _rotated_rect(size: tuple[int, int], center, length, width, deg) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    pts = cv2.boxPoints(((center[0], center[1]), (length, width), deg))
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def test_axis_aligned_block_gives_its_pixel_extent_and_zero_angle():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:20] = True  # 10 wide (x), 4 high (y)
    box = oriented_box(mask, offset=(100, 200))
    assert box.length == pytest.approx(10.0) and box.width == pytest.approx(4.0)
    assert box.angle == pytest.approx(0.0, abs=1e-6)
    assert box.center == pytest.approx((100 + 14.5, 200 + 6.5))


def test_a_tall_block_has_its_long_side_along_y():
    mask = np.zeros((30, 10), bool)
    mask[2:22, 3:6] = True  # 3 wide, 20 high
    box = oriented_box(mask)
    assert (box.length, box.width) == pytest.approx((20.0, 3.0))
    assert abs(abs(box.angle) - math.pi / 2) < 1e-6
    assert -math.pi / 2 <= box.angle < math.pi / 2


@pytest.mark.parametrize("deg", [-60.0, -30.0, 15.0, 40.0, 75.0])
def test_rotated_rectangles_recover_length_width_and_angle(deg):
    mask = _rotated_rect((200, 200), (100, 100), 120, 30, deg)
    box = oriented_box(mask)
    assert box.length == pytest.approx(120, abs=3) and box.width == pytest.approx(30, abs=3)
    assert box.center == pytest.approx((100, 100), abs=1.5)
    # the long side's direction, modulo pi
    diff = (math.degrees(box.angle) - deg + 90) % 180 - 90
    assert abs(diff) < 2.0


def test_contour_has_at_most_the_vertex_budget_and_lies_on_the_boundary():
    mask = np.zeros((80, 80), np.uint8)
    cv2.circle(mask, (40, 40), 25, 1, -1)
    poly = contour_polygon(mask.astype(bool), offset=(7, 9), max_vertices=12)
    assert 3 <= len(poly) <= 12 and poly.dtype == np.float32
    r = np.hypot(poly[:, 0] - 7 - 40, poly[:, 1] - 9 - 40)
    assert np.all(np.abs(r - 25) <= 1.5)
    # a square needs only its four corners
    sq = np.zeros((20, 20), bool)
    sq[4:14, 4:14] = True
    corners = contour_polygon(sq, max_vertices=8)
    assert sorted(map(tuple, corners.tolist())) == [(4, 4), (4, 13), (13, 4), (13, 13)]


def test_the_largest_part_is_used_and_empty_masks_are_refused():
    mask = np.zeros((20, 40), bool)
    mask[2:4, 2:4] = True
    mask[5:15, 20:35] = True
    assert oriented_box(mask).length == pytest.approx(15.0)
    with pytest.raises(ValueError, match="empty mask"):
        oriented_box(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="at least 3"):
        contour_polygon(mask, max_vertices=2)


def test_instance_geometry_equals_the_two_functions_from_one_trace():
    from pasta_ros.core.grasp_geometry import instance_geometry

    mask = _rotated_rect((120, 160), (80, 60), 90, 25, 33.0)
    box, poly = instance_geometry(mask, (5, 7), 10)
    assert box == oriented_box(mask, (5, 7))
    np.testing.assert_array_equal(poly, contour_polygon(mask, (5, 7), 10))
    assert instance_geometry(mask, (5, 7), 0)[1].shape == (0, 2)
    np.testing.assert_array_equal(instance_geometry(mask, max_vertices=2)[1],
                                  contour_polygon(mask, max_vertices=3))
