import numpy as np
import pytest

from rawnet2_jax.data import protocols as P
from rawnet2_jax.errors import DataError

TRAIN = """LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1004644 - A01 spoof
LA_0080 LA_T_1271820 - A06 spoof
"""
EVAL = """LA_0039 LA_E_2834763 - A11 spoof
LA_0014 LA_E_8877452 - A14 spoof
LA_0040 LA_E_6828287 - A16 spoof
LA_0012 LA_E_1000001 - - bonafide
"""


def test_cm_protocol(tmp_path):
    p = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    p.write_text(TRAIN)
    e = P.parse_cm_protocol(p)
    assert [x.utt_id for x in e] == ["LA_T_1138215", "LA_T_1004644", "LA_T_1271820"]
    assert [x.label for x in e] == [1, 0, 0]
    assert [x.attack for x in e] == ["-", "A01", "A06"]
    assert e[0].speaker == "LA_0079" and e[2].speaker == "LA_0080"
    assert P.count_summary(e) == (3, 1)


def test_cm_protocol_eval_and_blank_lines(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text(EVAL + "\n\n")
    e = P.parse_cm_protocol(p)
    assert len(e) == 4 and e[3].key == "bonafide" and e[2].attack == "A16"


@pytest.mark.parametrize(
    "text,match",
    [
        ("LA_0079 LA_T_1 - A01\n", "expected 5 fields"),
        ("LA_0079 LA_T_1 - A01 fake\n", "key must be"),
        ("LA_0079 LA_T_1 - A01 bonafide\n", "bona fide line has attack"),
        ("LA_0079 LA_T_1 - A01 spoof\nLA_0079 LA_T_1 - A02 spoof\n", "listed twice"),
        ("LA_0079 LA_T_1 - - spoof\n", "spoof line has no attack id"),
        ("\n", "no entries"),
    ],
)
def test_cm_protocol_errors(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        P.parse_cm_protocol(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_missing_protocol(tmp_path):
    with pytest.raises(DataError, match="not found"):
        P.parse_cm_protocol(tmp_path / "x.txt")


def test_asv_scores(tmp_path):
    p = tmp_path / "asv.txt"
    p.write_text("bonafide target 18.20527\nbonafide nontarget -30.5\nA01 spoof 6.9\nA02 spoof -1.5\n")
    s = P.parse_asv_scores(p)
    np.testing.assert_allclose(s.target, [18.20527])
    np.testing.assert_allclose(s.nontarget, [-30.5])
    np.testing.assert_allclose(s.spoof, [6.9, -1.5])
    p.write_text("bonafide other 1.0\n")
    with pytest.raises(DataError, match=":1:"):
        P.parse_asv_scores(p)
    p.write_text("A01 spoof x\n")
    with pytest.raises(DataError, match="not a number"):
        P.parse_asv_scores(p)


def test_in_the_wild_meta(tmp_path):
    p = tmp_path / "meta.csv"
    p.write_text('file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,"Doe, John",bona-fide\n')
    e = P.parse_in_the_wild_meta(p)
    assert [(x.file, x.speaker, x.label, x.utt_id) for x in e] == [
        ("0.wav", "Alec Guinness", 0, "0"),
        ("1.wav", "Doe, John", 1, "1"),
    ]
    p.write_text("file,speaker,label\n0.wav,A,maybe\n")
    with pytest.raises(DataError, match="label must be"):
        P.parse_in_the_wild_meta(p)
    p.write_text("name,who\n0.wav,A\n")
    with pytest.raises(DataError, match="header"):
        P.parse_in_the_wild_meta(p)
    for rows, match in (("3.wav,A,spoof\n3.flac,B,spoof\n", r"meta.csv:3: utterance 3 \(3.flac\) is listed twice"),
                        ("/data/1.wav,A,spoof\n", r"meta.csv:2: file /data/1.wav is not inside the corpus"),
                        ("../1.wav,A,spoof\n", r"meta.csv:2: file ../1.wav is not inside the corpus")):
        p.write_text("file,speaker,label\n" + rows)
        with pytest.raises(DataError, match=match):
            P.parse_in_the_wild_meta(p)


def test_la_layout(tmp_path):
    la = tmp_path / "LA"
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True)
    assert P.find_la_root(tmp_path) == la and P.find_la_root(la) == la
    assert P.la_protocol_path(la, "dev").name == "ASVspoof2019.LA.cm.dev.trl.txt"
    assert P.la_protocol_path(la, "train").name == "ASVspoof2019.LA.cm.train.trn.txt"
    assert P.la_audio_path(la, "eval", "LA_E_1") == la / "ASVspoof2019_LA_eval" / "flac" / "LA_E_1.flac"
    assert P.la_asv_scores_path(la, "eval").name == "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    with pytest.raises(DataError, match="no ASVspoof 2019 LA tree"):
        P.find_la_root(tmp_path / "LA" / "ASVspoof2019_LA_cm_protocols")
    with pytest.raises(ValueError):
        P.la_protocol_path(la, "test")


def test_check_files_exist(tmp_path):
    a = tmp_path / "a.flac"
    a.write_bytes(b"x")
    P.check_files_exist([a], "x")
    with pytest.raises(DataError, match=r"missing audio file .*b.flac \(and 1 more\)"):
        P.check_files_exist([a, tmp_path / "b.flac", tmp_path / "c.flac"], "asvspoof2019_la/train")


def test_a_byte_order_mark_is_not_part_of_the_first_speaker(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes("\ufeffLA_0033 LA_T_1 - - bonafide\n".encode("utf-8"))
    assert P.parse_cm_protocol(p)[0].speaker == "LA_0033"

