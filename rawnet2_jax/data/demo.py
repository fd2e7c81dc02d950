"""A small synthetic corpus in the exact ASVspoof 2019 LA layout (for demos and tests).

``make_demo_corpus(out_dir)`` writes::

    OUT/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
    OUT/LA/ASVspoof2019_LA_{train,dev,eval}/flac/<utt>.flac          (16 kHz, PCM_16)
    OUT/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt

so the real builder, pipeline, training and metrics run on it unchanged.

Bona fide "speech": :func:`rawnet2_jax.data.synth.voiced_speech` (glottal pulse trains with a
varying f0, aspiration noise, per-syllable vowel formants, syllable envelopes with pauses,
fricative bursts) plus a faint noise floor. Each speaker has its own f0 range, vocal-tract
scale and speaking rate; speakers are disjoint across splits.

Spoofs are the same kind of speech passed through a synthetic "attack" with a distinct
vocoder-like artefact:

=====  ==========================================================  ===========
A01    buzzy: impulse excitation, monotone f0, no aspiration       train, dev
A02    band-limited to 4 kHz (8 kHz vocoder upsampled)                train, dev
A03    STFT magnitude with random phase (phase-less reconstruction)   train, dev
A04    6-bit mu-law quantisation noise (low-bit waveform codec)       train, dev
A07    over-smoothed: wide formants, flattened f0 (parametric TTS)    eval only
A08    STFT magnitude with zero phase (frame-rate buzz)               eval only
A16    = A04 algorithm (as in the real corpus, A16 = A04)             eval only
=====  ==========================================================  ===========

``eval_channel="codecs"`` (``python -m rawnet2_jax.data demo DIR --eval-channel codecs``)
passes the eval audio through a channel as well: utterance ``i`` of eval gets
``eval_channels()[i % K]`` (clean, then every codec of :mod:`rawnet2_jax.augment.codec`
this machine has), written to ``ASVspoof2019.LA.cm.eval.channel.txt`` next to the protocols
(``utt_id channel`` lines) for per-channel EERs (``rawnet2-jax metrics --conditions``).
Train and dev are byte-identical to the clean corpus of the same seed.

Everything is a function of ``seed`` (each utterance has its own generator keyed by
(seed, split, index)), so the corpus is byte-identical across runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from rawnet2_jax.data import protocols as P
from rawnet2_jax.errors import DataError
from rawnet2_jax.fsutil import make_temp_dir, recover_moved_aside, remove_stale_temps, replace_dir
from rawnet2_jax.data.synth import SR, Speaker, random_speaker, voiced_speech

TRAIN_ATTACKS = ("A01", "A02", "A03", "A04")
EVAL_ATTACKS = ("A07", "A08", "A16")
_PREFIX = {"train": "T", "dev": "D", "eval": "E"}
EVAL_CHANNEL_MODES = ("clean", "codecs")
CHANNEL_FILE = "ASVspoof2019.LA.cm.eval.channel.txt"
MARKER = ".rawnet2_demo.json"  # in LA/: this corpus is ours to rewrite (its DemoConfig)

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo corpus (defaults: building + training the demo preset in minutes)."""

    num_train: int = 400
    num_dev: int = 300
    num_eval: int = 400
    seconds: float = 2.0  # mean clip length; lengths vary +-25 %
    bonafide_fraction: float = 0.25
    speakers_per_split: int = 4
    seed: int = 0
    eval_channel: str = "clean"  # or "codecs": eval audio through codecs (see module doc)

    def __post_init__(self):
        if self.eval_channel not in EVAL_CHANNEL_MODES:
            raise ValueError(f"eval_channel must be one of {', '.join(EVAL_CHANNEL_MODES)}, got {self.eval_channel!r}")

    def count(self, split: str) -> int:
        return {"train": self.num_train, "dev": self.num_dev, "eval": self.num_eval}[split]


def _speakers(split_index: int, cfg: DemoConfig) -> list[tuple[str, Speaker]]:
    rng = np.random.default_rng([cfg.seed, 1000 + split_index])
    ids = [f"LA_{(split_index * 100 + 30 + k):04d}" for k in range(cfg.speakers_per_split)]
    return [(spk_id, random_speaker(rng, female=k % 2 == 1)) for k, spk_id in enumerate(ids)]


def _stft_resynth(x: np.ndarray, rng: np.random.Generator, mode: str) -> np.ndarray:
    nfft, hop = 512, 128
    win = np.hanning(nfft + 1)[:-1]
    pad = np.concatenate([np.zeros(nfft), x, np.zeros(nfft)])
    nfr = 1 + (len(pad) - nfft) // hop
    idx = np.arange(nfft)[None, :] + hop * np.arange(nfr)[:, None]
    mag = np.abs(np.fft.rfft(pad[idx] * win, axis=1))
    if mode == "random":
        spec = mag * np.exp(1j * rng.uniform(0, 2 * np.pi, mag.shape))
    else:  # zero phase
        spec = mag.astype(np.complex128)
    frames = np.fft.irfft(spec, n=nfft, axis=1)
    if mode != "random":
        frames = np.fft.fftshift(frames, axes=1)
    frames *= win
    y = np.zeros(len(pad))
    np.add.at(y, idx, frames)
    norm = np.zeros(len(pad))
    np.add.at(norm, idx, np.broadcast_to(win**2, frames.shape))
    y = y / np.maximum(norm, 1e-3)
    return y[nfft : nfft + len(x)]


def _mulaw(x: np.ndarray, bits: int) -> np.ndarray:
    mu = 2**bits - 1
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu


def synthesize(rng: np.random.Generator, spk: Speaker, n: int, attack: str) -> np.ndarray:
    """One utterance (float64 in [-1, 1]) of bona fide speech (attack "-") or an attack."""
    from scipy import signal

    if attack == "A01":
        x = voiced_speech(rng, spk, n, monotone=True, breathy=False, buzzy=True)
    elif attack == "A07":
        x = voiced_speech(rng, spk, n, smooth=True, breathy=False)
    else:
        x = voiced_speech(rng, spk, n)
    if attack == "A02":
        sos = signal.butter(10, 3800, fs=SR, output="sos")
        x = signal.sosfilt(sos, x)
    elif attack == "A03":
        x = _stft_resynth(x, rng, "random")
    elif attack == "A08":
        x = _stft_resynth(x, rng, "zero")
    elif attack in ("A04", "A16"):
        x = _mulaw(x / (np.max(np.abs(x)) + 1e-9), 6)
    x = x / (np.max(np.abs(x)) + 1e-9)
    x = x + rng.normal(0, 10 ** (-55 / 20), n)  # faint noise floor (channel)
    return x / (np.max(np.abs(x)) + 1e-9) * rng.uniform(0.3, 0.8)


def _asv_scores(rng: np.random.Generator, entries: list[P.CmEntry]) -> list[str]:
    """Organiser-style ASV score lines: bona fide targets / nontargets, and spoofs."""
    mean_spoof = {a: m for a, m in zip(TRAIN_ATTACKS + EVAL_ATTACKS, (7.0, -2.0, 30.0, 35.0, 10.0, 20.0, 35.0))}
    n_bona = sum(e.key == "bonafide" for e in entries)
    lines = [f"bonafide target {rng.normal(26, 14):.5f}" for _ in range(n_bona)]
    lines += [f"bonafide nontarget {rng.normal(-30, 15):.5f}" for _ in range(4 * n_bona)]
    lines += [f"{e.attack} spoof {rng.normal(mean_spoof[e.attack], 13):.5f}" for e in entries if e.key == "spoof"]
    return lines


def eval_channels() -> tuple[str, ...]:
    """The channels of a ``--eval-channel codecs`` eval split: "clean", then each codec."""
    from rawnet2_jax.augment.codec import available_codecs

    return ("clean", *available_codecs())


def channel_path(la: str | os.PathLike) -> Path:
    """Where the eval channel of each utterance is written (``utt_id channel`` lines)."""
    return Path(la) / "ASVspoof2019_LA_cm_protocols" / CHANNEL_FILE


def _through_channel(x: np.ndarray, channel: str) -> np.ndarray:
    from rawnet2_jax.augment.codec import apply_codec

    return x if channel == "clean" else apply_codec(x.astype(np.float32), channel)


def make_demo_corpus(out_dir: str | os.PathLike, cfg: DemoConfig = DemoConfig(), *, progress: bool = True) -> Path:
    """Write the demo corpus as ``out_dir/LA`` and return that path.

    It is written beside ``LA`` and renamed into place when complete, so a kill or a full disk
    leaves no half corpus. An existing ``LA`` is replaced only when this function wrote it (its
    :data:`MARKER` file): never a real corpus that ``out_dir`` happens to hold.
    """
    out = Path(out_dir)
    la = out / "LA"
    recover_moved_aside(la, lambda p: (p / MARKER).is_file())  # a kill between replace_dir's renames
    if la.exists() and not (la / MARKER).is_file():
        raise DataError(f"{la} exists and is not a demo corpus (no {MARKER} in it); choose another output "
                        f"folder, or remove {la} to write the demo corpus there")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, "LA")
    scratch = make_temp_dir(out, "LA")
    try:
        _write_corpus(scratch / "LA", cfg, progress)
        (scratch / "LA" / MARKER).write_text(json.dumps(dataclasses.asdict(cfg), sort_keys=True) + "\n")
        replace_dir(scratch / "LA", la)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return la


def _write_corpus(la: Path, cfg: DemoConfig, progress: bool) -> None:
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True, exist_ok=True)
    (la / "ASVspoof2019_LA_asv_scores").mkdir(parents=True, exist_ok=True)
    for si, split in enumerate(P.LA_SPLITS):
        count = cfg.count(split)
        attacks = EVAL_ATTACKS if split == "eval" else TRAIN_ATTACKS
        speakers = _speakers(si, cfg)
        rng = np.random.default_rng([cfg.seed, si])
        ids = rng.choice(9_000_000, size=count, replace=False) + 1_000_000
        n_bona = int(round(count * cfg.bonafide_fraction))
        keys = ["-"] * n_bona + [attacks[i % len(attacks)] for i in range(count - n_bona)]
        keys = [keys[i] for i in rng.permutation(count)]
        audio_dir = P.la_audio_dir(la, split)
        audio_dir.mkdir(parents=True, exist_ok=True)
        entries = []
        channels = eval_channels() if split == "eval" and cfg.eval_channel == "codecs" else ()
        channel_lines: list[str] = []
        it = range(count)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"demo/{split}", unit="utt")
        for i in it:
            urng = np.random.default_rng([cfg.seed, si, i])
            spk_id, spk = speakers[int(urng.integers(len(speakers)))]
            n = int(SR * cfg.seconds * urng.uniform(0.75, 1.25))
            x = synthesize(urng, spk, n, keys[i])
            utt = f"LA_{_PREFIX[split]}_{ids[i]}"
            if channels:
                channel = channels[i % len(channels)]
                x = _through_channel(x, channel)
                channel_lines.append(f"{utt} {channel}")
            sf.write(audio_dir / f"{utt}.flac", x, SR, subtype="PCM_16")
            key = "bonafide" if keys[i] == "-" else "spoof"
            entries.append(P.CmEntry(speaker=spk_id, utt_id=utt, attack=keys[i], key=key))
        lines = [f"{e.speaker} {e.utt_id} - {e.attack} {e.key}" for e in entries]
        P.la_protocol_path(la, split).write_text("\n".join(lines) + "\n")
        if channels:
            channel_path(la).write_text("\n".join(channel_lines) + "\n")
        if split != "train":
            P.la_asv_scores_path(la, split).write_text("\n".join(_asv_scores(rng, entries)) + "\n")

