"""iCAS building blocks on hand-made inputs: GQS, MaskPooling, matching scores, the loss."""

from __future__ import annotations

import pytest
import torch

from pasta_ros.core.icas.decoder import DecoderOutput
from pasta_ros.core.icas.gqs import (
    covering_radius,
    greedy_k_center,
    optimal_k_center_radius,
    select_queries,
)
from pasta_ros.core.icas.losses import LossWeights, Target, hungarian, icas_loss
from pasta_ros.core.icas.mask_pooling import mask_pool, prompt_tokens
from pasta_ros.core.icas.matching import (
    class_logits,
    feature_partition,
    mfm_anomaly,
    mfm_normal,
    weighted_masks,
)


@pytest.mark.parametrize("seed", range(8))
def test_gqs_radius_within_twice_optimum(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(10, 3, generator=g) * torch.rand(1, 3, generator=g) * 4
    for k in (1, 2, 3, 4):
        idx = greedy_k_center(pts, k)
        assert len(set(idx.tolist())) == k
        opt = optimal_k_center_radius(pts, k)
        assert covering_radius(pts, idx) <= 2 * opt + 1e-6


def test_gqs_picks_the_outlier_region() -> None:
    # A.7: a cell far from the background (> 2 R*) is always covered by a query of its own.
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 8, 6, 6, generator=g) * 0.05 + torch.tensor([1.0] + [0] * 7).view(
        1, 8, 1, 1)
    feats[0, :, 4, 1] = torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0])  # one anomalous cell
    idx = select_queries(feats, 3)
    assert idx.shape == (1, 3)
    assert 4 * 6 + 1 in idx[0].tolist()


def test_mask_pool_hand_values() -> None:
    f = torch.arange(4, dtype=torch.float32).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    masks = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]],
                          [[0.0, 0.5], [0.0, 1.0]]]).unsqueeze(0)
    out = mask_pool(f, masks)
    assert out.shape == (1, 3, 1)
    assert out[0, :, 0].tolist() == pytest.approx([0.5, 0.0, (0.5 + 3) / 1.5])
    # A 4x4 mask over a 2x2 grid is area-averaged first: the top-left quarter -> cell 0 only.
    big = torch.zeros(1, 1, 4, 4)
    big[..., :2, :2] = 1
    assert mask_pool(f, big)[0, 0, 0] == pytest.approx(0.0)


def test_prompt_tokens_split_by_mask() -> None:
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0, 0, 0] = 4.0  # channel 0 only in the masked cell
    f[0, 1] = 1.0
    f[0, 1, 0, 0] = 0.0
    m = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    q_p, q_ntp = prompt_tokens(f, m)
    assert q_p[0].tolist() == pytest.approx([4.0, 0.0])
    assert q_ntp[0].tolist() == pytest.approx([0.0, 1.0])


def test_weighted_masks_is_paper_sum_without_overlap() -> None:
    masks = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): disjoint
    p = torch.tensor([[0.9, 0.2]])
    assert weighted_masks(p, masks)[0, 0].tolist() == pytest.approx([0.9, 0.2])
    dup = torch.ones(1, 2, 1, 1)  # two full masks overlap: weighted mean, not 1.1
    assert float(weighted_masks(p, dup)) == pytest.approx(0.55)


def _two_region_case() -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, 0, :, 0] = 1.0  # left column = "anomaly" direction
    feats[0, 1, :, 1] = 1.0  # right column = "normal" direction
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, :, 0] = 1.0
    masks[0, 1, :, 1] = 1.0
    return feats, masks


def test_mfm_anomaly_marks_the_matching_mask() -> None:
    feats, masks = _two_region_case()
    s = mfm_anomaly(feats, masks, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert s[0, :, 0].min() > 0.99 and s[0, :, 1].max() < 0.01


def test_mfm_normal_is_one_minus_best_cosine() -> None:
    feats, masks = _two_region_case()
    q_r = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # normal: right direction and the diagonal
    s = mfm_normal(feats, masks, q_r)
    cos45 = 2 ** -0.5
    assert s[0, 0, 0] == pytest.approx(1 - cos45, abs=1e-5)
    assert s[0, 0, 1] == pytest.approx(0.0, abs=1e-6)


def _output(content: torch.Tensor, prompt: torch.Tensor, ntp: torch.Tensor, fg: torch.Tensor,
            bg: torch.Tensor, mask_logits: torch.Tensor) -> DecoderOutput:
    return DecoderOutput(mask_logits, content[None], prompt[None], ntp[None], fg[None], bg[None])


def test_class_logits_and_absent_prompt() -> None:
    e = torch.eye(3) * 5
    out = _output(e, e[:1], e[1:2], e[0], e[2], torch.zeros(1, 3, 2, 2))
    sem, ntp = class_logits(out)
    assert sem[0].argmax(-1).tolist() == [0, 1, 2]
    assert ntp[0].argmax(-1).tolist() == [0, 1, 2]
    out0 = _output(e, e[:0], e[1:2], e[0], e[2], torch.zeros(1, 3, 2, 2))
    sem0, _ = class_logits(out0)
    assert torch.isfinite(sem0).all() and (sem0[0].softmax(-1)[:, 0] < 1e-6).all()


def test_hungarian_and_loss_prefer_the_right_assignment() -> None:
    e = torch.eye(3) * 5
    gt = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])  # 2 segments
    good = torch.stack([gt[1], gt[0], torch.zeros(2, 2)]) * 20 - 10  # q0 = seg1, q1 = seg0
    target = Target(gt, torch.tensor([1, 0]))
    out = _output(e, e[:1], e[1:2], e[0], e[2], good[None])  # q0 class 0, q1 class 1
    sem, ntp = class_logits(out)
    rows, cols = hungarian(sem[0], ntp[0], good.flatten(1), target, LossWeights())
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}
    bad = _output(e[[1, 0, 2]], e[:1], e[1:2], e[0], e[2], good[None])  # classes swapped
    assert icas_loss(out, [target])["total"] < icas_loss(bad, [target])["total"]


def test_feature_partition_assigns_cells_to_nearest_centre() -> None:
    feats, _ = _two_region_case()
    part = feature_partition(feats, torch.tensor([[0, 1]]))  # centres: cell (0,0) and (0,1)
    assert part.shape == (1, 2, 2, 2)
    assert part[0, 0, :, 0].min() > 0.99 and part[0, 1, :, 1].min() > 0.99


def test_class_share_ignores_no_object_queries() -> None:
    from pasta_ros.core.icas.matching import class_share
    big = 20.0
    # q0: target over pixel 0; q1: non-target over pixel 1; q2: no-object covering both.
    logits = torch.tensor([[[big, 0, 0], [0, big, 0], [0, 0, big]]])
    masks = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]])
    s = class_share(logits, masks)
    assert s[0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-3)
    # MFM weighted by objectness: the no-object mask no longer dilutes pixel 0.
    from pasta_ros.core.icas.matching import _spread, objectness
    p = torch.tensor([[1.0, 0.0, 0.0]])
    assert _spread(p, masks, objectness(logits))[0, 0, 0] == pytest.approx(1.0, abs=1e-3)
    assert weighted_masks(p, masks)[0, 0, 0] == pytest.approx(0.5)
