"""`python -m rawnet2_jax.metrics` round trips on small fixtures."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rawnet2_jax.metrics import compute_eer
from rawnet2_jax.metrics.__main__ import main


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    cm, bona, spoof = [], [], []
    for i in range(40):
        s = rng.normal(2, 1)
        bona.append(s)
        cm.append(f"LA_E_{i:05d} - bonafide {s!r}")
    for i in range(60):
        attack = "A07" if i % 2 else "A08"
        s = rng.normal(-1 + (i % 2), 1)
        spoof.append(s)
        cm.append(f"LA_E_{100 + i:05d} {attack} spoof {s!r}")
    asv = [f"bonafide target {rng.normal(3, 1):.4f}" for _ in range(50)]
    asv += [f"bonafide nontarget {rng.normal(-2, 1):.4f}" for _ in range(50)]
    asv += [f"A07 spoof {rng.normal(1, 2):.4f}" for _ in range(20)]
    asv += [f"A08 spoof {rng.normal(0, 2):.4f}" for _ in range(20)]
    (tmp_path / "cm.txt").write_text("\n".join(cm) + "\n")
    (tmp_path / "asv.txt").write_text("\n".join(asv) + "\n")
    return tmp_path / "cm.txt", tmp_path / "asv.txt", (bona, spoof)


def test_json_keys_and_values(files, capsys):
    cm, asv, (bona, spoof) = files
    assert main([str(cm), "--asv-scores", str(asv), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"eer", "min_tdcf", "per_attack"} <= set(out)
    assert out["eer"] == pytest.approx(100 * compute_eer(bona, spoof)[0], abs=1e-9)
    assert set(out["per_attack"]) == {"A07", "A08"}
    assert {"eer", "min_tdcf"} <= set(out["per_attack"]["A07"])
    assert out["t_dcf_version"] == "2019"
    assert main([str(cm), "--asv-scores", str(asv), "--json", "--t-dcf", "2021"]) == 0
    out21 = json.loads(capsys.readouterr().out)
    assert out21["t_dcf_version"] == "2021" and out21["min_tdcf"] != out["min_tdcf"]


def test_json_without_asv_has_no_min_tdcf(files, capsys):
    cm, _, _ = files
    assert main([str(cm), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "min_tdcf" not in out and "min_tdcf" not in out["per_attack"]["A08"]


def test_table(files, capsys):
    cm, asv, _ = files
    assert main([str(cm), "--asv-scores", str(asv)]) == 0
    text = capsys.readouterr().out
    assert "EER:" in text and "min t-DCF:" in text and "A07" in text and "A08" in text


def test_malformed_line_reports_line_number(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_text("u1 - bonafide 1.0\nu2 A01 spoof 0.5\nu3 A01 spoof\n")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{path}:3:" in err and err.count("\n") == 1


def test_missing_files(tmp_path, files, capsys):
    assert main([str(tmp_path / "nope.txt")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    cm, _, _ = files
    assert main([str(cm), "--asv-scores", str(tmp_path / "nope_asv.txt")]) == 1
    assert "nope_asv.txt" in capsys.readouterr().err


def test_one_class_is_an_error(tmp_path, capsys):
    path = tmp_path / "s.txt"
    path.write_text("u1 - bonafide 1.0\nu2 - bonafide 0.5\n")
    assert main([str(path)]) == 1
    assert "no spoof" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["x", "--t-dcf", "2020"])


def test_help_teaches_the_convention(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "HIGHER" in text and "bona fide" in text and "--asv-scores" in text and "dev" in text


def test_module_entry_point(files):
    cm, asv, _ = files
    res = subprocess.run(
        [sys.executable, "-m", "rawnet2_jax.metrics", str(cm), "--asv-scores", str(asv), "--json"],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "per_attack" in json.loads(res.stdout)


def test_a_reader_that_stops_early_ends_it_quietly(files):
    """`... | head`: the reader is gone before the table is written; exit 141, no traceback."""
    cm, asv, _ = files
    p = subprocess.Popen([sys.executable, "-m", "rawnet2_jax.metrics", str(cm), "--asv-scores", str(asv)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the child writes anything
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
