"""Metrics against an independent, loop-based transcription of the official formulas."""

import subprocess
import sys

import numpy as np
import pytest

from rawnet2_jax.metrics import (
    ASVScores,
    CMScores,
    MetricsError,
    ScoreFileError,
    asv_error_rates,
    compute_det_curve,
    compute_eer,
    evaluate_scores,
    min_tdcf,
    parse_asv_scores,
    parse_cm_scores,
    read_cm_scores,
    tdcf_curve,
    write_cm_scores,
)

TOL = 1e-9

# ---------------------------------------------------------------------------------------
# Independent reference: plain Python loops, written from the definitions of the official
# ASVspoof evaluation code (stable-sort DET, EER at the FRR/FAR crossing, the 2019 and 2021
# t-DCF formulas), sharing nothing with the library.


def ref_det(tar, non):
    trials = [(float(s), True) for s in tar] + [(float(s), False) for s in non]
    trials = sorted(trials, key=lambda t: t[0])  # Python's sort is stable, like mergesort
    frr, far, thr = [0.0], [1.0], [trials[0][0] - 0.001]
    rejected_tar = rejected_non = 0
    for score, is_tar in trials:
        if is_tar:
            rejected_tar += 1
        else:
            rejected_non += 1
        frr.append(rejected_tar / len(tar))
        far.append((len(non) - rejected_non) / len(non))
        thr.append(score)
    return frr, far, thr


def ref_eer(tar, non):
    frr, far, thr = ref_det(tar, non)
    best = 0
    for i in range(len(frr)):
        if abs(frr[i] - far[i]) < abs(frr[best] - far[best]):
            best = i
    return (frr[best] + far[best]) / 2, thr[best]


def ref_min_tdcf(bona, spoof, tar, non, spf, version):
    _, asv_thr = ref_eer(tar, non)
    p_fa = sum(1 for s in non if s >= asv_thr) / len(non)
    p_miss = sum(1 for s in tar if s < asv_thr) / len(tar)
    p_miss_spoof = sum(1 for s in spf if s < asv_thr) / len(spf)
    p_fa_spoof = sum(1 for s in spf if s >= asv_thr) / len(spf)
    p_spoof = 0.05
    p_tar = 0.95 * 0.99
    p_non = 0.95 * 0.01
    frr, far, _ = ref_det(bona, spoof)
    if version == "2019":
        c1 = p_tar * (1 - 1 * p_miss) - p_non * 10 * p_fa
        c2 = 10 * p_spoof * (1 - p_miss_spoof)
        values = [(c1 * m + c2 * f) / min(c1, c2) for m, f in zip(frr, far)]
    else:
        c0 = p_tar * 1 * p_miss + p_non * 10 * p_fa
        c1 = p_tar * 1 - c0
        c2 = p_spoof * 10 * p_fa_spoof
        values = [(c0 + c1 * m + c2 * f) / (c0 + min(c1, c2)) for m, f in zip(frr, far)]
    return min(values)


# ---------------------------------------------------------------------------------------


def _random_sets(seed, n_sets):
    rng = np.random.default_rng(seed)
    for i in range(n_sets):
        n_b = int(rng.integers(1, 60))
        n_s = int(rng.integers(1, 60))
        bona = rng.normal(rng.uniform(-1, 3), rng.uniform(0.1, 3), n_b)
        spoof = rng.normal(0, 1, n_s)
        kind = i % 4
        if kind == 1:  # heavy ties across classes
            bona, spoof = np.round(bona), np.round(spoof)
        elif kind == 2:  # saturated probabilities
            bona = np.float32(1 / (1 + np.exp(-8 * bona))).astype(np.float64)
            spoof = np.float32(1 / (1 + np.exp(-8 * spoof))).astype(np.float64)
        elif kind == 3:  # integer scores in a tiny range
            bona = rng.integers(0, 3, n_b).astype(float)
            spoof = rng.integers(0, 3, n_s).astype(float)
        yield bona, spoof


ADVERSARIAL = [
    ("constant", np.zeros(5), np.zeros(7)),
    ("one bona fide", np.array([0.3]), np.array([0.1, 0.5, 0.2])),
    ("one spoof", np.array([0.3, -1.0, 2.0]), np.array([0.3])),
    ("one each, tied", np.array([1.0]), np.array([1.0])),
    ("perfect", np.array([2.0, 3.0]), np.array([-1.0, 0.0, 1.0])),
    ("inverted", np.array([-2.0, -3.0]), np.array([1.0, 0.0, 0.5])),
    ("huge", np.array([1e300, -1e300]), np.array([0.0, 1e-300])),
]


@pytest.mark.parity
def test_det_and_eer_match_reference_on_random_sets():
    for bona, spoof in _random_sets(0, 200):
        frr, far, thr = compute_det_curve(bona, spoof)
        rfrr, rfar, rthr = ref_det(bona, spoof)
        np.testing.assert_allclose(frr, rfrr, rtol=0, atol=TOL)
        np.testing.assert_allclose(far, rfar, rtol=0, atol=TOL)
        np.testing.assert_allclose(thr, rthr, rtol=0, atol=TOL)
        eer, t = compute_eer(bona, spoof)
        reer, rt = ref_eer(bona, spoof)
        assert abs(eer - reer) <= TOL, (eer, reer)
        assert t == rt


@pytest.mark.parity
@pytest.mark.parametrize("name,bona,spoof", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_eer_adversarial(name, bona, spoof):
    eer, thr = compute_eer(bona, spoof)
    reer, rthr = ref_eer(bona, spoof)
    assert abs(eer - reer) <= TOL and thr == rthr
    assert 0.0 <= eer <= 1.0


def test_eer_known_values():
    assert compute_eer([2.0, 3.0], [-1.0, 0.0, 1.0])[0] == 0.0
    assert compute_eer([-2.0, -3.0], [1.0, 0.0])[0] == 1.0
    # Official tie rule: bona fide sorts before a tied spoof, so ties count against the CM.
    assert compute_eer(np.zeros(4), np.zeros(4))[0] == 1.0
    # Sorted: 0.1 s, 0.2 s, 0.3 b, 0.5 s -> |FRR - FAR| smallest (1/3) at threshold 0.2.
    eer, thr = compute_eer([0.3], [0.1, 0.5, 0.2])
    assert eer == pytest.approx(1 / 6) and thr == 0.2


def _random_asv(rng, n=80, with_spoof=True):
    tar = rng.normal(3, 1.5, n)
    non = rng.normal(-2, 1.5, n)
    spf = rng.normal(1, 2, n) if with_spoof else np.zeros(0)
    return tar, non, spf


@pytest.mark.parity
@pytest.mark.parametrize("version", ["2019", "2021"])
def test_min_tdcf_matches_reference_on_random_sets(version):
    rng = np.random.default_rng(1)
    for bona, spoof in _random_sets(2, 120):
        tar, non, spf = _random_asv(rng, n=int(rng.integers(5, 60)))
        if rng.random() < 0.3:
            tar, non, spf = np.round(tar), np.round(non), np.round(spf)
        rates = asv_error_rates(tar, non, spf)
        try:
            got, _ = min_tdcf(bona, spoof, rates, version)
        except MetricsError:  # degenerate ASV draw: min(C1, C2) == 0
            assert rates.p_miss_spoof == 1.0 or rates.p_fa_spoof == 0.0 or rates.p_miss == 1.0
            continue
        want = ref_min_tdcf(bona, spoof, tar, non, spf, version)
        assert abs(got - want) <= TOL, (got, want)


@pytest.mark.parity
@pytest.mark.parametrize("version", ["2019", "2021"])
@pytest.mark.parametrize("name,bona,spoof", ADVERSARIAL[:-1], ids=[a[0] for a in ADVERSARIAL[:-1]])
def test_min_tdcf_adversarial(version, name, bona, spoof):
    tar, non, spf = _random_asv(np.random.default_rng(3))
    got, _ = min_tdcf(bona, spoof, asv_error_rates(tar, non, spf), version)
    assert abs(got - ref_min_tdcf(bona, spoof, tar, non, spf, version)) <= TOL


def test_tdcf_properties():
    rng = np.random.default_rng(4)
    tar, non, spf = _random_asv(rng)
    rates = asv_error_rates(tar, non, spf)
    bona, spoof = rng.normal(2, 1, 50), rng.normal(-2, 1, 50)
    for version in ("2019", "2021"):
        curve, thr = tdcf_curve(bona, spoof, rates, version)
        assert curve.shape == thr.shape == (101,)
        assert curve.min() <= 1.0 + 1e-12  # never worse than the default (accept/reject-all)
    # A perfect CM reaches the floor: 0 for 2019, C0 / (C0 + min(C1, C2)) for 2021.
    assert min_tdcf([5.0, 6.0], [-5.0, -6.0], rates, "2019")[0] == 0.0
    assert 0 < min_tdcf([5.0, 6.0], [-5.0, -6.0], rates, "2021")[0] < 0.2


def test_asv_error_rates_definition():
    tar = np.array([1.0, 2.0, 3.0, 4.0])
    non = np.array([-1.0, 0.0, 2.5, -3.0])
    spf = np.array([0.0, 5.0, 2.9])
    r = asv_error_rates(tar, non, spf)
    _, thr = ref_eer(tar, non)
    assert r.threshold == thr
    assert r.p_fa == np.mean(non >= thr)
    assert r.p_miss == np.mean(tar < thr)
    assert r.p_miss_spoof == np.mean(spf < thr)
    assert r.p_fa_spoof == np.mean(spf >= thr)


def test_errors_are_clear():
    with pytest.raises(MetricsError, match="no target"):
        compute_eer([], [1.0])
    with pytest.raises(MetricsError, match="NaN"):
        compute_eer([np.nan, 1.0], [1.0])
    with pytest.raises(MetricsError, match="NaN or infinite"):
        compute_eer([1.0], [np.inf])
    tar, non, _ = _random_asv(np.random.default_rng(5))
    # Every spoof rejected by the ASV: C2 = 0, the 2019 normalisation is undefined.
    rates = asv_error_rates(tar, non, np.full(5, -100.0))
    with pytest.raises(MetricsError, match="undefined"):
        min_tdcf([1.0, 2.0], [0.0, 3.0], rates, "2019")
    with pytest.raises(MetricsError, match="unknown t-DCF version"):
        min_tdcf([1.0, 2.0], [0.0, 3.0], asv_error_rates(tar, non, [0.0]), "2020")


# ---------------------------------------------------------------------------------------
# Score files and the per-attack report.


def _cm_lines(rng, attacks=("A01", "A02", "A03"), n_bona=30, n_each=20):
    lines = []
    for i in range(n_bona):
        lines.append(f"LA_D_{i:07d} - bonafide {rng.normal(2, 1):.6f}")
    j = n_bona
    for a_i, attack in enumerate(attacks):
        for _ in range(n_each):
            lines.append(f"LA_D_{j:07d} {attack} spoof {rng.normal(-a_i, 1):.6f}")
            j += 1
    rng.shuffle(lines)
    return lines


def _asv_lines(rng, attacks=("A01", "A02", "A03")):
    lines = [f"bonafide target {rng.normal(3, 1.5):.5f}" for _ in range(60)]
    lines += [f"bonafide nontarget {rng.normal(-2, 1.5):.5f}" for _ in range(60)]
    for k, attack in enumerate(attacks):
        lines += [f"{attack} spoof {rng.normal(k, 2):.5f}" for _ in range(25)]
    return lines


@pytest.mark.parity
@pytest.mark.parametrize("version", ["2019", "2021"])
def test_report_pooled_and_per_attack_match_reference(version):
    rng = np.random.default_rng(6)
    cm = parse_cm_scores(_cm_lines(rng))
    asv = parse_asv_scores(_asv_lines(rng))
    rep = evaluate_scores(cm, asv, tdcf_version=version)

    bona = [s for s, k in zip(cm.scores, cm.keys) if k == "bonafide"]
    spoof = [s for s, k in zip(cm.scores, cm.keys) if k == "spoof"]
    tar = [s for s, k in zip(asv.scores, asv.keys) if k == "target"]
    non = [s for s, k in zip(asv.scores, asv.keys) if k == "nontarget"]
    spf = [s for s, k in zip(asv.scores, asv.keys) if k == "spoof"]
    assert abs(rep.eer - ref_eer(bona, spoof)[0]) <= TOL
    assert abs(rep.min_tdcf - ref_min_tdcf(bona, spoof, tar, non, spf, version)) <= TOL
    assert list(rep.per_attack) == ["A01", "A02", "A03"]
    for attack, r in rep.per_attack.items():
        s = [x for x, a in zip(cm.scores, cm.attacks) if a == attack]
        own = [x for x, src, k in zip(asv.scores, asv.sources, asv.keys) if k == "spoof" and src == attack]
        assert r.n_spoof == 20
        assert abs(r.eer - ref_eer(bona, s)[0]) <= TOL
        assert abs(r.min_tdcf - ref_min_tdcf(bona, s, tar, non, own, version)) <= TOL
    d = rep.to_dict()
    assert d["eer"] == pytest.approx(100 * rep.eer)
    assert set(d["per_attack"]["A02"]) >= {"eer", "min_tdcf"}


def test_report_without_asv_and_fallback_to_pooled_asv_spoofs():
    rng = np.random.default_rng(7)
    cm = parse_cm_scores(_cm_lines(rng, attacks=("A07", "A08")))
    rep = evaluate_scores(cm)
    assert rep.min_tdcf is None and "min_tdcf" not in rep.to_dict()
    assert "min_tdcf" not in rep.to_dict()["per_attack"]["A07"]
    assert "min t-DCF:  -" in rep.format_table()
    # The ASV file of another split (attack ids, none shared): an error, not a t-DCF of attacks it never saw.
    asv = parse_asv_scores(_asv_lines(rng, attacks=("A01", "A02")))
    with pytest.raises(MetricsError, match="another split"):
        evaluate_scores(cm, asv)
    # An attack without ASV spoof trials of its own uses the pooled ASV spoofs.
    asv = parse_asv_scores(_asv_lines(rng, attacks=("A08", "A09")))
    rep = evaluate_scores(cm, asv)
    assert rep.per_attack["A07"].asv == rep.asv and rep.per_attack["A08"].asv != rep.asv
    assert not rep.warnings
    # Sources that are not ASVspoof attack ids: a warning only.
    rep = evaluate_scores(cm, parse_asv_scores(_asv_lines(rng, attacks=("tts", "vc"))))
    assert rep.per_attack["A07"].asv == rep.asv and any("same split" in w for w in rep.warnings)


def test_report_empty_class_and_tie_warnings():
    cm = parse_cm_scores(["a - bonafide 1", "b - bonafide 2"])
    with pytest.raises(MetricsError, match="no spoof"):
        evaluate_scores(cm)
    cm = parse_cm_scores(["a A01 spoof 1", "b A02 spoof 2"])
    with pytest.raises(MetricsError, match="no bona fide"):
        evaluate_scores(cm)
    cm = parse_cm_scores(["a - bonafide 1", "b A01 spoof 1", "c A01 spoof 0"])
    assert any("distinct" in w for w in evaluate_scores(cm).warnings)
    # Ties that move the EER (saturated probabilities) are flagged; mere ties are not.
    lines = [f"b{i} - bonafide 1" for i in range(10)] + ["b10 - bonafide 2"]
    lines += [f"s{i} A01 spoof {1 if i < 5 else 0}" for i in range(10)]
    rep = evaluate_scores(parse_cm_scores(lines))
    assert rep.eer > 0.4 and any("move the EER from 0.000 %" in w for w in rep.warnings)
    lines = ["b0 - bonafide 2", "b1 - bonafide 5", "b2 - bonafide 6", "s0 A01 spoof 5", "s1 A01 spoof 3", "s2 A01 spoof -1"]
    assert evaluate_scores(parse_cm_scores(lines)).warnings == []
    asv = parse_asv_scores(["bonafide target 1", "bonafide nontarget 0"])
    with pytest.raises(MetricsError, match="no spoof trials"):
        evaluate_scores(cm, asv)


def test_score_file_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    scores = rng.normal(size=6) * 1e3
    scores[0] = np.float32(0.1)  # a float32 logit widened to float64
    utts = [f"u{i}" for i in range(6)]
    attacks = ["-", "A01", None, "A02", "A01", "-"]
    keys = ["bonafide", "spoof", 1, "spoof", 0, "bonafide"]
    path = tmp_path / "sub" / "scores.txt"
    write_cm_scores(path, utts, attacks, keys, scores)
    cm = read_cm_scores(path)
    assert cm.utt_ids == utts
    assert cm.keys == ["bonafide", "spoof", "bonafide", "spoof", "spoof", "bonafide"]
    assert cm.attacks == ["-", "A01", "-", "A02", "A01", "-"]
    assert np.array_equal(cm.scores, scores)  # lossless
    assert path.read_text().splitlines()[1].split()[:3] == ["u1", "A01", "spoof"]


@pytest.mark.parametrize(
    "bad,match",
    [
        ("LA_1 A01 spoof", "expected 4 columns"),
        ("LA_1 A01 spoof 0.1 extra", "expected 4 columns"),
        ("LA_1 A01 fake 0.1", "must be 'bonafide' or 'spoof'"),
        ("LA_1 A01 spoof abc", "not a number"),
        ("LA_1 A01 spoof nan", "must be finite"),
        ("LA_0 - bonafide 2.0", "already scored on line 1"),
    ],
)
def test_score_file_errors_name_the_line(tmp_path, bad, match):
    path = tmp_path / "s.txt"
    path.write_text(f"LA_0 - bonafide 1.0\n\nLA_2 A01 spoof -1\n{bad}\n")
    with pytest.raises(ScoreFileError, match=match) as e:
        read_cm_scores(path)
    assert f"{path}:4:" in str(e.value)
    assert "\n" not in str(e.value)


def test_score_file_missing_empty_binary(tmp_path):
    with pytest.raises(ScoreFileError, match="does not exist"):
        read_cm_scores(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ScoreFileError, match="no score lines"):
        read_cm_scores(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ScoreFileError):
        read_cm_scores(tmp_path / "bin.txt")
    with pytest.raises(ScoreFileError, match="directory"):
        read_cm_scores(tmp_path)


def test_asv_file_errors():
    with pytest.raises(ScoreFileError, match=r"<asv>:2: expected 3 columns"):
        parse_asv_scores(["bonafide target 1", "x y"], "<asv>")
    with pytest.raises(ScoreFileError, match="'target', 'nontarget' or 'spoof'"):
        parse_asv_scores(["bonafide bonafide 1"])


def test_cm_scores_accessors():
    cm = CMScores(["a", "b", "c", "d"], ["-", "A1", "A2", "-"], ["bonafide", "spoof", "spoof", "spoof"],
                  np.array([1.0, 2.0, 3.0, 4.0]))
    assert cm.spoof_attacks() == ["A1", "A2"]  # a spoof of unknown attack ('-') is pooled only
    assert cm.spoof_scores("A2").tolist() == [3.0]
    assert cm.spoof_scores().tolist() == [2.0, 3.0, 4.0]
    asv = ASVScores(["bonafide", "A1"], ["target", "spoof"], np.array([1.0, 2.0]))
    assert asv.of_key("spoof", "A1").tolist() == [2.0] and asv.of_key("spoof", "A2").size == 0


def test_metrics_import_does_not_load_jax():
    code = "import sys, rawnet2_jax.metrics, rawnet2_jax.metrics.__main__; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_undefined_tdcf_for_one_attack_is_a_warning_not_a_failure():
    rng = np.random.default_rng(9)
    cm = parse_cm_scores(_cm_lines(rng, attacks=("A01", "A02")))
    lines = [f"bonafide target {rng.normal(3, 1):.4f}" for _ in range(40)]
    lines += [f"bonafide nontarget {rng.normal(-2, 1):.4f}" for _ in range(40)]
    lines += ["A01 spoof -100"] * 5 + ["A02 spoof 5"] * 5  # the ASV rejects every A01 spoof: C2 = 0
    rep = evaluate_scores(cm, parse_asv_scores(lines))
    assert rep.min_tdcf is not None and rep.per_attack["A02"].min_tdcf is not None
    assert rep.per_attack["A01"].min_tdcf is None
    assert any("A01" in w and "undefined" in w for w in rep.warnings)
    d = rep.to_dict()
    assert "min_tdcf" not in d["per_attack"]["A01"] and "min_tdcf" in d["per_attack"]["A02"]
    assert "A01" in rep.format_table()
