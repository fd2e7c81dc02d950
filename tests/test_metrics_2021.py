"""ASVspoof 2021 decomposed tables: hand-worked cells, the 2019 functions, a transcription of
the organisers' eval package, the key / score file errors and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rawnet2_jax.data.keys2021 import DF, LA, POOLED
from rawnet2_jax.errors import UserError
from rawnet2_jax.metrics import asv_error_rates, compute_eer, evaluate_scores, min_tdcf
from rawnet2_jax.metrics.__main__ import main
from rawnet2_jax.metrics.asvspoof2021 import evaluate_2021
from rawnet2_jax.metrics.scorefile import CMScores
from tests.data_fixtures import df21_key_lines, la21_asv_lines, la21_key_lines, write_2021_keys

# --------------------------------------------------------------------------- reference
# A plain transcription of what eval-package/main.py + eval_wrapper.py + eval_metrics.py do
# (pandas queries replaced by list comprehensions over parsed rows), kept independent of
# the library: its own DET curve, EER, ASV error rates and C012.

P_SPOOF = 0.05
P_TAR, P_NON = (1 - P_SPOOF) * 0.99, (1 - P_SPOOF) * 0.01
C_MISS, C_FA, C_FA_SPOOF = 1.0, 10.0, 10.0


def ref_det(tar, non):
    tar, non = np.asarray(tar, float), np.asarray(non, float)
    allsc = np.concatenate([tar, non])
    lab = np.concatenate([np.ones(tar.size), np.zeros(non.size)])
    order = np.argsort(allsc, kind="mergesort")
    lab = lab[order]
    tar_below = np.cumsum(lab)
    non_above = non.size - (np.arange(1, allsc.size + 1) - tar_below)
    frr = np.r_[0.0, tar_below / tar.size]
    far = np.r_[1.0, non_above / non.size]
    thr = np.r_[allsc[order[0]] - 0.001, allsc[order]]
    return frr, far, thr


def ref_eer(tar, non):
    frr, far, thr = ref_det(tar, non)
    k = np.argmin(np.abs(frr - far))
    return np.mean((frr[k], far[k])), thr[k]


def ref_c012(tar, non, spf):
    if not (len(tar) and len(non) and len(spf)):
        return None
    tar, non, spf = (np.asarray(x, float) for x in (tar, non, spf))
    _, thr = ref_eer(tar, non)
    p_fa = np.sum(non >= thr) / non.size
    p_miss = np.sum(tar < thr) / tar.size
    p_fa_spoof = np.sum(spf >= thr) / spf.size
    c0 = P_TAR * C_MISS * p_miss + P_NON * C_FA * p_fa
    c1 = P_TAR * C_MISS - (P_TAR * C_MISS * p_miss + P_NON * C_FA * p_fa)
    c2 = P_SPOOF * C_FA_SPOOF * p_fa_spoof
    return c0, c1, c2


def ref_tables(cm_rows, cm_scores, asv_rows, track, subset):
    """{"eer": {r: {c: percent|None}}, "min_tdcf": ... | None} like the package's arrays."""
    rf, cf = track.row_factor, track.col_factor
    cm = [(row, s) for row, s in zip(cm_rows, cm_scores) if row["subset"] == subset]
    asv = [row for row in asv_rows if row["subset"] == subset] if asv_rows is not None else None
    eer, tdcf = {}, {}
    for r in (*track.rows, POOLED):
        eer[r], tdcf[r] = {}, {}
        for c in (*track.cols, POOLED):
            def keep(row, spoofed):
                ok = c == POOLED or row[cf] == c  # column factor: both classes
                if spoofed and r != POOLED:  # row factor: spoofed trials only
                    ok = ok and row[rf] == r
                return ok

            bona = [s for row, s in cm if row["label"] == "bonafide" and keep(row, False)]
            spf = [s for row, s in cm if row["label"] == "spoof" and keep(row, True)]
            if not (bona and spf):
                eer[r][c] = tdcf[r][c] = None
                continue
            eer[r][c] = 100 * ref_eer(bona, spf)[0]
            if asv is None:
                continue
            coef = ref_c012(
                [a["score"] for a in asv if a["label"] == "target" and keep(a, False)],
                [a["score"] for a in asv if a["label"] == "nontarget" and keep(a, False)],
                [a["score"] for a in asv if a["label"] == "spoof" and keep(a, True)],
            )
            if coef is None:
                tdcf[r][c] = None
                continue
            frr, far, _ = ref_det(bona, spf)
            curve = (coef[0] + coef[1] * frr + coef[2] * far) / (coef[0] + min(coef[1], coef[2]))
            tdcf[r][c] = float(curve[curve.argmin()])
    return {"eer": eer, "min_tdcf": tdcf if asv is not None else None}


def parse_rows(lines, names):
    return [dict(zip(names, ln.split())) for ln in lines]


# --------------------------------------------------------------------------- fixtures


def random_scores(cm_rows, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for row in cm_rows:
        if row["label"] == "bonafide":
            out.append(rng.normal(2.0, 1.0))
        else:
            a = int(row["attack"][1:]) if row["attack"].startswith("A") else 10
            out.append(rng.normal(-1.0 + 0.15 * (a - 7), 1.5))
    return np.round(out, 3).tolist()  # a few ties, as real scores have


@pytest.fixture(scope="module")
def la_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("la21")
    cm_lines = la21_key_lines(1500, seed=3)
    meta, asv_scores = la21_asv_lines(4000, seed=3)
    # No ASV spoof trials of A19 over opus: that cell has an EER but no C012, hence no t-DCF.
    keep = [i for i, m in enumerate(meta) if not (" opus " in m and " A19 spoof " in m)]
    asv = ([meta[i] for i in keep], [asv_scores[i] for i in keep])
    keys = write_2021_keys(root, "LA", cm_lines, asv)
    cm_rows = parse_rows(cm_lines, LA.cm_columns)
    scores = random_scores(cm_rows)
    asv_rows = parse_rows(asv[0], LA.cm_columns)
    for row, line in zip(asv_rows, asv[1]):
        row["score"] = float(line.split()[2])
    order = np.random.default_rng(1).permutation(len(cm_rows))  # any order is fine
    (root / "scores.txt").write_text("".join(f"{cm_rows[i]['trial']} {scores[i]!r}\n" for i in order))
    return keys, root / "scores.txt", cm_rows, scores, asv_rows


def assert_tables_equal(got, want, tol=1e-12):
    assert got.keys() == want.keys()
    for table in ("eer", "min_tdcf"):
        g, w = got[table], want[table]
        if w is None:
            assert g is None, table
            continue
        assert list(g) == list(w), table
        for r in w:
            assert list(g[r]) == list(w[r]), (table, r)
            for c in w[r]:
                if w[r][c] is None:
                    assert g[r][c] is None, f"{table}[{r}][{c}]: {g[r][c]} where the package has none"
                else:
                    assert g[r][c] is not None and abs(g[r][c] - w[r][c]) <= tol, (
                        f"{table}[{r}][{c}]: {g[r][c]!r} vs package {w[r][c]!r}, diff "
                        f"{abs((g[r][c] or 0) - w[r][c]):.3e}"
                    )


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.parametrize("subset", ["eval", "progress", "hidden"])
def test_la_matches_eval_package_transcription(la_tree, subset):
    keys, scores_file, cm_rows, scores, asv_rows = la_tree
    got = evaluate_2021(scores_file, keys, "LA", subset).to_dict()
    want = ref_tables(cm_rows, scores, asv_rows, LA, subset)
    assert_tables_equal(got, want)
    cells = [v for r in want["min_tdcf"].values() for v in r.values()]
    assert sum(v is not None for v in cells) > 40
    if subset == "eval":
        assert want["min_tdcf"]["A19"]["opus"] is None and want["eer"]["A19"]["opus"] is not None


def test_la_pooled_cells_equal_2019_functions(la_tree):
    keys, scores_file, cm_rows, scores, asv_rows = la_tree
    t = evaluate_2021(scores_file, keys, "LA", "eval")
    ev = [(row, s) for row, s in zip(cm_rows, scores) if row["subset"] == "eval"]
    bona = [s for row, s in ev if row["label"] == "bonafide"]
    spf = [s for row, s in ev if row["label"] == "spoof"]
    assert t.pooled_eer == compute_eer(bona, spf)[0]
    asv = [a for a in asv_rows if a["subset"] == "eval"]
    rates = asv_error_rates(*([a["score"] for a in asv if a["label"] == k] for k in ("target", "nontarget", "spoof")))
    assert t.pooled_min_tdcf == pytest.approx(min_tdcf(bona, spf, rates, "2021")[0], rel=1e-12)
    # Per attack (Pooled column) = the 2019 per-attack table: that attack's spoofs vs all bona fide.
    cm = CMScores([row["trial"] for row, _ in ev], [row["attack"] if row["label"] == "spoof" else "-" for row, _ in ev],
                  [row["label"] for row, _ in ev], np.array([s for _, s in ev]))
    rep = evaluate_scores(cm)
    for attack, r in rep.per_attack.items():
        assert t.value("eer", attack, POOLED) == r.eer, attack


def test_hand_worked_cells(tmp_path):
    cm = [
        "LA_0001 LA_E_0000001 none - bonafide bonafide notrim eval",
        "LA_0001 LA_E_0000002 none - bonafide bonafide notrim eval",
        "LA_0002 LA_E_0000003 none - A07 spoof notrim eval",
        "LA_0002 LA_E_0000004 none - A08 spoof notrim eval",
        "LA_0002 LA_E_0000005 alaw ita_tx A08 spoof notrim progress",  # other subset: ignored
    ]
    asv_meta = [
        "S-none T1 none - bonafide target notrim eval",
        "S-none T2 none - bonafide target notrim eval",
        "S-none T3 none - bonafide nontarget notrim eval",
        "S-none T4 none - bonafide nontarget notrim eval",
        "S-none T5 none - A07 spoof notrim eval",
        "S-none T6 none - A08 spoof notrim eval",
    ]
    asv_scores = ["S-none T1 2", "S-none T2 4", "S-none T3 -1", "S-none T4 -3", "S-none T5 3", "S-none T6 -5"]
    keys = write_2021_keys(tmp_path, "LA", cm, (asv_meta, asv_scores))
    (tmp_path / "s.txt").write_text("LA_E_0000004 0\nLA_E_0000001 1\nLA_E_0000003 2\nLA_E_0000002 3\nLA_E_0000005 9\n")
    d = evaluate_2021(tmp_path / "s.txt", keys, "LA", "eval").to_dict()
    # bona {1, 3}; A07 {2}: rejecting the 1 gives FRR 1/2, FAR 1 -> EER 75 %; A08 {0} is below all: 0 %;
    # pooled {0, 2}: at FRR = FAR = 1/2 -> 50 %.
    assert d["eer"]["A07"]["none"] == d["eer"]["A07"][POOLED] == 75.0
    assert d["eer"]["A08"][POOLED] == 0.0 and d["eer"][POOLED][POOLED] == 50.0
    assert d["eer"]["A07"]["alaw"] is None and d["eer"]["A19"][POOLED] is None
    # ASV: EER threshold -1 (the last rejected score), so Pmiss 0, Pfa 1/2; pooled spoofs {3, -5}:
    # Pfa_spoof 1/2.  C0 = Pnon*10*0.5 = 0.0475, C1 = Ptar - C0 = 0.893, C2 = 0.05*10*0.5 = 0.25;
    # best CM threshold rejects only the spoof at 0: (C0 + C2 * 1/2) / (C0 + C2) = 0.1725 / 0.2975.
    assert d["min_tdcf"][POOLED][POOLED] == pytest.approx(0.1725 / 0.2975, rel=1e-12)
    # A07 alone: ASV spoof {3} is accepted (Pfa_spoof 1), C2 = 0.5; CM {1,3} vs {2}: best is to
    # reject 1 and 2 (Pmiss 1/2, Pfa 0): (C0 + C1 / 2) / (C0 + min(C1, C2)) = 0.494 / 0.5475.
    assert d["min_tdcf"]["A07"]["none"] == pytest.approx(0.494 / 0.5475, rel=1e-12)
    # A08: its ASV spoof (-5) is rejected (C2 = 0): normalisation C0 + 0; a perfect CM leaves C0 / C0 = 1.
    assert d["min_tdcf"]["A08"]["none"] == pytest.approx(1.0, rel=1e-12)
    assert d["min_tdcf"]["A07"]["alaw"] is None


def test_df_tables(tmp_path):
    lines = df21_key_lines(1200, seed=5)
    keys = write_2021_keys(tmp_path, "DF", lines)
    rows = parse_rows(lines, DF.cm_columns)
    scores = random_scores(rows, seed=2)
    (tmp_path / "s.txt").write_text("".join(f"{r['trial']} {s!r}\n" for r, s in zip(rows, scores)))
    got = evaluate_2021(tmp_path / "s.txt", keys, "DF", "eval").to_dict()
    assert got["min_tdcf"] is None
    assert list(got["eer"]) == [*DF.rows, POOLED] and list(got["eer"][POOLED]) == [*DF.cols, POOLED]
    assert_tables_equal(got, ref_tables(rows, scores, None, DF, "eval"))


def test_cli_json_and_text(la_tree, capsys):
    keys, scores_file, *_ = la_tree
    assert main([str(scores_file), "--asvspoof2021", str(keys.parent), "--track", "LA", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"eer", "min_tdcf"}
    assert list(d["eer"]) == [f"A{i:02d}" for i in range(7, 20)] + ["Pooled"]
    assert list(d["min_tdcf"]["A07"]) == ["none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus", "Pooled"]
    assert main([str(scores_file), "--asvspoof2021", str(keys), "--track", "LA", "--subset", "progress"]) == 0
    text = capsys.readouterr().out
    assert "min t-DCF" in text and "EER (%)" in text and "attack \\ codec" in text and "subset progress" in text
    pooled = [ln for ln in text.splitlines() if ln.startswith("Pooled")]
    assert len(pooled) == 2


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: ls[:-1], "has no score for 1 of the"),
        (lambda ls: ls + ["LA_E_9999999 0.5"], "trial LA_E_9999999 is not in"),
        (lambda ls: ls + [ls[0]], "already scored on line 1"),
        (lambda ls: ls[:3] + [ls[3] + " spoof"] + ls[4:], ":4: expected 2 columns"),
        (lambda ls: ls[:2] + [ls[2].split()[0] + " nan"] + ls[3:], ":3: score is nan"),
    ],
)
def test_score_file_errors(la_tree, tmp_path, capsys, edit, message):
    keys, scores_file, *_ = la_tree
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(edit(scores_file.read_text().splitlines())) + "\n")
    assert main([str(bad), "--asvspoof2021", str(keys), "--track", "LA"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def _keys_with(tmp_path, cm=None, asv_meta=None, asv_scores=None):
    cm_lines = la21_key_lines(60, seed=1)
    meta, scores = la21_asv_lines(80, seed=1)
    keys = write_2021_keys(tmp_path, "LA", cm(cm_lines) if cm else cm_lines,
                           (asv_meta(meta) if asv_meta else meta, asv_scores(scores) if asv_scores else scores))
    (tmp_path / "s.txt").write_text("".join(f"{ln.split()[1]} 0.{i}\n" for i, ln in enumerate(cm_lines)))
    return keys, tmp_path / "s.txt"


@pytest.mark.parametrize(
    "cm, meta, scores, message",
    [
        (lambda ls: ls[:5] + [" ".join(ls[5].split()[:7])] + ls[6:], None, None, "CM/trial_metadata.txt:6: expected 8 columns"),
        (lambda ls: ls[:1] + [ls[1].replace(" eval", " evil").replace(" progress", " evil").replace(" hidden", " evil")] + ls[2:],
         None, None, "trial_metadata.txt:2: subset must be one of"),
        (lambda ls: ls + [ls[0]], None, None, "is listed twice (first on line 1)"),
        (None, lambda ls: ls[:3] + [ls[3].replace("notrim", "notrim x")] + ls[4:], None, "ASV/trial_metadata.txt:4: expected 8"),
        (None, lambda ls: ls[:-1], None, "79 ASV trials; the two files"),
        (None, None, lambda ls: ls[:7] + [ls[8]] + [ls[7]] + ls[9:], "score.txt:8: "),
        (None, None, lambda ls: ls[:2] + [ls[2].rsplit(" ", 1)[0] + " x"] + ls[3:], "score.txt:3: score 'x' is not a number"),
    ],
)
def test_malformed_keys_name_file_and_line(tmp_path, capsys, cm, meta, scores, message):
    keys, score_file = _keys_with(tmp_path, cm, meta, scores)
    assert main([str(score_file), "--asvspoof2021", str(keys), "--track", "LA"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_missing_key_files(tmp_path, capsys):
    keys, score_file = _keys_with(tmp_path)
    (keys / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt").unlink()
    assert main([str(score_file), "--asvspoof2021", str(keys), "--track", "LA"]) == 1
    assert "ASVTorch_Kaldi/score.txt: LA ASV score file not found" in capsys.readouterr().err
    assert main([str(score_file), "--asvspoof2021", str(keys), "--track", "DF"]) == 1
    assert "no DF key file here" in capsys.readouterr().err
    with pytest.raises(UserError, match="no LA key file"):
        evaluate_2021(score_file, tmp_path / "nowhere", "LA")


def test_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["s.txt", "--track", "LA"])
    assert e.value.code == 2 and "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["s.txt", "--asvspoof2021", "k", "--track", "LA", "--asv-scores", "a.txt"])
    assert e.value.code == 2 and "--asv-scores is for 2019" in capsys.readouterr().err
    for extra, needle in ((["--conditions", "c.txt"], "--conditions is for 2019 score files"),
                          (["--t-dcf", "2019"], "drop --t-dcf 2019")):  # were ignored without a word
        with pytest.raises(SystemExit) as e:
            main(["s.txt", "--asvspoof2021", "k", "--track", "LA", *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
