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
