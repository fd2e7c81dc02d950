"""Tiny corpora in the official formats, written by the data tests (never /work/shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

_PREFIX = {"train": "T", "dev": "D", "eval": "E"}
_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}


def write_la_tree(root: Path, n: dict[str, int] | None = None, seed: int = 0) -> dict[str, list[dict]]:
    """Write ``root/LA`` with random int16 FLAC files; return the expected records per split."""
    n = n or {"train": 6, "dev": 4, "eval": 5}
    rng = np.random.default_rng(seed)
    la = Path(root) / "LA"
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True, exist_ok=True)
    expected: dict[str, list[dict]] = {}
    for split, count in n.items():
        d = la / f"ASVspoof2019_LA_{split}" / "flac"
        d.mkdir(parents=True, exist_ok=True)
        attacks = ("A07", "A10", "A16") if split == "eval" else ("A01", "A02")
        recs, lines = [], []
        for i in range(count):
            utt = f"LA_{_PREFIX[split]}_{1000000 + 7919 * i + seed:07d}"
            bona = i % 3 == 0
            attack = "-" if bona else attacks[i % len(attacks)]
            spk = f"LA_00{10 + i % 2}"
            pcm = (rng.standard_normal(1600 + 160 * i) * 4000).clip(-32768, 32767).astype(np.int16)
            sf.write(d / f"{utt}.flac", pcm, 16000, subtype="PCM_16")
            lines.append(f"{spk} {utt} - {attack} {'bonafide' if bona else 'spoof'}")
            recs.append({"utt_id": utt, "speaker": spk, "attack": attack, "label": int(bona), "pcm": pcm})
        (la / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_SUFFIX[split]}.txt").write_text(
            "\n".join(lines) + "\n"
        )
        expected[split] = recs
    return expected


def write_wild_tree(root: Path, count: int = 5, seed: int = 0) -> list[dict]:
    """Write ``root/release_in_the_wild`` with wav files at assorted rates / channel counts."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "release_in_the_wild"
    d.mkdir(parents=True, exist_ok=True)
    rows, recs = ["file,speaker,label"], []
    for i in range(count):
        sr = (16000, 22050, 44100, 8000)[i % 4]
        ch = 1 + i % 2
        x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.2 * sr)) / sr))[:, None].repeat(ch, 1)
        x += 0.01 * rng.standard_normal(x.shape)
        sf.write(d / f"{i}.wav", x, sr, subtype="PCM_16")
        label = "bona-fide" if i % 2 == 0 else "spoof"
        spk = "Speaker, Jr." if i == 1 else f"Person {i % 2}"
        rows.append(f'{i}.wav,"{spk}",{label}')
        recs.append({"utt_id": str(i), "speaker": spk, "label": int(i % 2 == 0), "sr": sr, "frames": x.shape[0]})
    (d / "meta.csv").write_text("\n".join(rows) + "\n")
    return recs


def records_source(n: int, seed: int = 0, min_len: int = 100, max_len: int = 3000) -> list[dict]:
    """A plain-list random-access source in the TFDS record format."""
    rng = np.random.default_rng(seed)
    return [
        {
            "audio": (rng.standard_normal(int(rng.integers(min_len, max_len))) * 3000).astype(np.int16).tobytes(),
            "label": i % 2,
            "utt_id": f"utt{i:05d}".encode(),
        }
        for i in range(n)
    ]


# --------------------------------------------------------------------------- ASVspoof 2021

LA21_CODECS = ("none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus")
LA21_TX = {"none": "-", "alaw": "ita_tx", "pstn": "mad_tx", "g722": "loc_tx", "ulaw": "sin_tx", "gsm": "loc_tx",
           "opus": "loc_tx"}
DF21_CODECS = ("nocodec", "low_mp3", "high_mp3", "low_m4a", "high_m4a", "low_ogg", "high_ogg", "mp3m4a", "oggm4a")
DF21_VOCODERS = ("traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
                 "neural_vocoder_nonautoregressive", "unknown")
SUBSETS21 = ("eval", "progress", "hidden")


def la21_key_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` lines of keys/LA/CM/trial_metadata.txt (8 columns), all subsets, codecs and attacks."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        codec = LA21_CODECS[int(rng.integers(len(LA21_CODECS)))]
        bona = rng.random() < 0.3
        attack = "bonafide" if bona else f"A{int(rng.integers(7, 20)):02d}"
        subset = SUBSETS21[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        trim = "only_speech" if subset == "hidden" else "notrim"
        lines.append(f"LA_00{10 + i % 7} LA_E_{1000000 + 7919 * i + seed:07d} {codec} {LA21_TX[codec]} {attack} "
                     f"{'bonafide' if bona else 'spoof'} {trim} {subset}")
    return lines


def df21_key_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` lines of keys/DF/CM/trial_metadata.txt (13 columns)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        codec = DF21_CODECS[int(rng.integers(len(DF21_CODECS)))]
        bona = rng.random() < 0.3
        source = ("asvspoof", "vcc2018", "vcc2020")[i % 3]
        subset = SUBSETS21[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        if bona:
            attack, vocoder, task, team = "bonafide", "bonafide", "-", "-"
        else:
            vocoder = DF21_VOCODERS[int(rng.integers(len(DF21_VOCODERS)))]
            attack, task, team = (f"A{int(rng.integers(7, 20)):02d}", "-", "-") if source == "asvspoof" else (
                f"Task1-team{i % 30:02d}", "Task1", f"team{i % 30:02d}")
        lines.append(f"LA_00{10 + i % 7} DF_E_{2000000 + 7919 * i + seed:07d} {codec} {source} {attack} "
                     f"{'bonafide' if bona else 'spoof'} notrim {subset} {vocoder} {task} {team} - -")
    return lines


def la21_asv_lines(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(keys/LA/ASV/trial_metadata.txt lines, ASVTorch_Kaldi/score.txt lines), matching line by line."""
    rng = np.random.default_rng(seed + 1)
    meta, scores = [], []
    for i in range(n):
        codec = LA21_CODECS[int(rng.integers(len(LA21_CODECS)))]
        label = ("target", "nontarget", "spoof")[int(rng.choice(3, p=[0.3, 0.3, 0.4]))]
        attack = f"A{int(rng.integers(7, 20)):02d}" if label == "spoof" else "bonafide"
        subset = SUBSETS21[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        spk = f"LA_00{i % 9:02d}-{codec}-{LA21_TX[codec]}"
        trial = f"LA_E_{5000000 + 31 * i:07d}-{codec}-{LA21_TX[codec]}"
        meta.append(f"{spk} {trial} {codec} {LA21_TX[codec]} {attack} {label} notrim {subset}")
        mean = {"target": 3.0, "nontarget": -2.0, "spoof": 0.5 + 0.2 * (i % 5)}[label]
        scores.append(f"{spk} {trial} {rng.normal(mean, 2.0):.6f}")
    return meta, scores


def write_2021_keys(root: Path, track: str, cm_lines: list[str], asv: tuple[list[str], list[str]] | None = None) -> Path:
    """Write ``root/keys/{track}/...``; returns ``root/keys``."""
    keys = Path(root) / "keys"
    cm = keys / track / "CM"
    cm.mkdir(parents=True, exist_ok=True)
    (cm / "trial_metadata.txt").write_text("\n".join(cm_lines) + "\n")
    if asv is not None:
        (keys / track / "ASV" / "ASVTorch_Kaldi").mkdir(parents=True, exist_ok=True)
        (keys / track / "ASV" / "trial_metadata.txt").write_text("\n".join(asv[0]) + "\n")
        (keys / track / "ASV" / "ASVTorch_Kaldi" / "score.txt").write_text("\n".join(asv[1]) + "\n")
    return keys


def write_2021_audio(root: Path, track: str, trials: list[str], parts: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """FLAC files ``ASVspoof2021_{track}_eval/flac/<trial>.flac`` (or split over ``parts`` folders
    ``ASVspoof2021_DF_eval_part00..`` as DF is shipped); returns ``{trial: int16 pcm}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, trial in enumerate(trials):
        base = Path(root)
        if parts:
            base = base / f"ASVspoof2021_{track}_eval_part{i % parts:02d}"
        d = base / f"ASVspoof2021_{track}_eval" / "flac"
        d.mkdir(parents=True, exist_ok=True)
        pcm = (rng.standard_normal(800 + 160 * (i % 5)) * 3000).clip(-32768, 32767).astype(np.int16)
        sf.write(d / f"{trial}.flac", pcm, 16000, subtype="PCM_16")
        out[trial] = pcm
    return out
