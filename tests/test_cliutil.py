"""Range-checked argparse types, and every numeric flag of our command lines refusing bad values
with one line before anything runs."""

from __future__ import annotations

import argparse

import pytest

from rawnet2_jax import cliutil
from tests.conftest import refuse_as_read_only


@pytest.mark.parametrize(
    "kind,good,bad",
    [
        (cliutil.positive_int, ["1", "32"], ["0", "-1", "1.5", "x"]),
        (cliutil.nonneg_int, ["0", "7"], ["-1", "2.0"]),
        (cliutil.positive_float, ["1e-4", "3"], ["0", "-1", "nan", "inf", "x"]),
        (cliutil.nonneg_float, ["0", "0.5"], ["-5", "-1e-9", "nan", "-inf"]),
        (cliutil.fraction, ["0.25", "0.999"], ["0", "1", "1.5", "-0.1"]),
        (cliutil.unit_interval, ["0", "1", "0.5"], ["1.01", "-0.01"]),
        (cliutil.int_range(2, 4), ["2", "4"], ["1", "5"]),
        (cliutil.float_range(-1.0, 1.0, hi_open=True), ["-1", "0.99"], ["1", "-1.01"]),
    ],
)
def test_range_types(kind, good, bad):
    for text in good:
        assert kind(text) == type(kind(text))(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            kind(text)
        assert text in str(e.value) and "\n" not in str(e.value)


def test_one_line_parser_message(capsys):
    p = cliutil.OneLineParser(prog="prog")
    p.add_argument("--lr", type=cliutil.positive_float)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--lr", "-1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --lr: must be > 0, got -1 (see prog --help)\n"


def _refused(main, argv, capsys, flag):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and flag in err, err


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["score", "--checkpoint", "m", "a.wav", "--max-seconds", "-5"], "--max-seconds"),
        (["score", "--checkpoint", "m", "a.wav", "--hop", "0"], "--hop"),
        (["score", "--checkpoint", "m", "a.wav", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--checkpoint", "m", "--split", "dev", "--data-dir", "d", "--out", "o",
          "--batch-size", "-2"], "--batch-size"),
    ],
)
def test_rawnet2_jax_cli_ranges(argv, flag, capsys):
    from rawnet2_jax.cli import main

    _refused(main, argv, capsys, flag)


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["a.pt", "out", "--tolerance", "-1"], "--tolerance"),
        (["a.pt", "out", "--tolerance", "nan"], "--tolerance"),
        (["a.pt", "out", "--verify-samples", "0"], "--verify-samples"),
        (["a.pt", "out", "--bn-stats-samples", "-3"], "--bn-stats-samples"),
        (["a.pt", "out", "--bn-stats-batch", "0"], "--bn-stats-batch"),
    ],
)
def test_convert_cli_ranges(argv, flag, capsys):
    from convert.__main__ import main

    _refused(main, argv, capsys, flag)


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["demo", "out", "--num-train", "0"], "--num-train"),
        (["demo", "out", "--num-dev", "-1"], "--num-dev"),
        (["demo", "out", "--num-eval", "0"], "--num-eval"),
        (["demo", "out", "--seconds", "0"], "--seconds"),
        (["demo", "out", "--bonafide-fraction", "1"], "--bonafide-fraction"),
        (["demo", "out", "--seed", "-1"], "--seed"),
    ],
)
def test_data_cli_ranges(argv, flag, capsys, tmp_path):
    from rawnet2_jax.data.__main__ import main

    _refused(main, argv[:1] + [str(tmp_path / "o")] + argv[2:], capsys, flag)
    assert not (tmp_path / "o").exists()


def test_data_demo_to_a_read_only_place_is_one_line(tmp_path, capsys, monkeypatch):
    from rawnet2_jax.data import demo
    from rawnet2_jax.data.__main__ import main

    monkeypatch.setattr(demo, "make_demo_corpus", refuse_as_read_only(tmp_path / "ro" / "LA"))
    assert main(["demo", str(tmp_path / "ro"), "--num-train", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "read-only file system" in err, err


def test_data_demo_read_only_for_real(unwritable_dir, capsys):
    from rawnet2_jax.data.__main__ import main

    assert main(["demo", str(unwritable_dir.path / "x"), "--num-train", "4", "--num-dev", "4", "--num-eval", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and unwritable_dir.reason in err, err
