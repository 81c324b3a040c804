"""The ICL-vs-fine-tuning metric modules on hand-computed vectors."""

import math

import numpy as np
import pytest

from hf_icl.metrics import METRICS, load_metric


def test_metrics_are_registered():
    assert {"rec2ftp", "simaou", "simam", "kendall_tau"} <= set(METRICS)


def rec2ftp(zs, icl, ft, gold):
    return load_metric("rec2ftp").compute(zs=zs, icl=icl, ft=ft, references=gold)


def test_rec2ftp_counts_what_icl_also_recovers():
    # ZS wrong on 0, 1, 2, 4; FT recovers 0, 1, 2 (not 4); ICL gets 0 and 2 of those (and 4).
    result = rec2ftp(zs=[0, 0, 2, 1, 0], icl=[1, 0, 1, 1, 1], ft=[1, 1, 1, 1, 0], gold=[1] * 5)
    assert result == {"rec2ftp": pytest.approx(200 / 3), "numerator": 2, "denominator": 3}


def test_rec2ftp_is_undefined_not_zero_without_recoveries():
    assert rec2ftp(zs=[1, 1], icl=[0, 0], ft=[1, 1], gold=[1, 1])["rec2ftp"] is None  # ZS right
    assert rec2ftp(zs=[0, 0], icl=[1, 1], ft=[0, 0], gold=[1, 1])["rec2ftp"] is None  # FT wrong
    zero = rec2ftp(zs=[0, 0], icl=[0, 0], ft=[1, 1], gold=[1, 1])
    assert zero == {"rec2ftp": 0.0, "numerator": 0, "denominator": 2}


def test_simaou_by_hand():
    # Layer 0: â_ZS = (1, 0), â_ICL = (0, 1), â_FT = (1, 1)/√2:
    #   cos((-1, 1), (1/√2 - 1, 1/√2)) = cos(22.5°).
    # Layer 1: FT leaves the (normalised) output unchanged: undefined, left out of the mean.
    zs = [[[1.0, 0.0], [0.0, 2.0]]]
    icl = [[[0.0, 5.0], [3.0, 0.0]]]  # scale is irrelevant: outputs are normalised first
    ft = [[[2.0, 2.0], [0.0, 7.0]]]
    result = load_metric("simaou").compute(icl=icl, ft=ft, zs=zs, seed=0)
    expected = math.cos(math.pi / 8)
    assert result["simaou_per_layer"][0] == pytest.approx(expected, rel=1e-6)
    assert math.isnan(result["simaou_per_layer"][1])
    assert result["simaou"] == pytest.approx(expected, rel=1e-6)
    assert np.asarray(result["simaou_per_example"]).shape == (1, 2)


def test_simaou_random_baselines_are_seeded_and_near_zero_for_symmetric_updates():
    rng = np.random.default_rng(1)
    zs, icl, ft = (list(rng.standard_normal((200, 1, 64))) for _ in range(3))
    first = load_metric("simaou").compute(icl=icl, ft=ft, zs=zs, seed=3)
    again = load_metric("simaou").compute(icl=icl, ft=ft, zs=zs, seed=3)
    assert first["simaou_normal"] == again["simaou_normal"]
    assert abs(first["simaou_normal"]) < 0.03 and abs(first["simaou_uniform"]) < 0.03
    same = load_metric("simaou").compute(icl=icl, ft=icl, zs=zs, seed=3)
    assert same["simaou"] == pytest.approx(1.0)


def test_simam_left_pads_and_offers_the_before_and_difference_forms():
    # One layer, two heads; the zero-shot query has one token fewer: left-padded with zeros.
    icl = [[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]]
    ft = [[[[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]]
    zs = [[[[0.0, 1.0], [1.0, 0.0]]]]  # → [0, 0, 1] and [0, 1, 0]
    result = load_metric("simam").compute(icl=icl, ft=ft, zs=zs)
    assert result["simam"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["simam_before"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    # head 0: s_ICL − s_ZS = s_FT − s_ZS = (1, 0, 0); head 1: ICL equals ZS, undefined
    assert result["simam_difference"] == pytest.approx(1.0)
    assert result["simam_per_layer"] == [pytest.approx(0.5)]


def test_kendall_tau_by_hand():
    icl = [[[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]]
    ft = [[[1.0, 2.0, 4.0, 3.0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]
    result = load_metric("kendall_tau").compute(icl=icl, ft=ft, seed=0)
    tau = result["kendall_tau_per_layer"]
    assert tau[0] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair of 6
    assert tau[1] == pytest.approx(-1.0)
    assert math.isnan(tau[2])  # constant importances: undefined
    assert result["kendall_tau"] == pytest.approx((4 / 6 - 1) / 2)


def test_kendall_tau_random_baseline_is_near_zero():
    rng = np.random.default_rng(0)
    icl = list(rng.random((100, 1, 30)))
    result = load_metric("kendall_tau").compute(icl=icl, ft=icl, seed=1)
    assert result["kendall_tau"] == pytest.approx(1.0)
    assert abs(result["kendall_tau_random"]) < 0.03
