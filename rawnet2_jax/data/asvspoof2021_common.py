"""What the ``asvspoof2021_la`` and ``asvspoof2021_df`` TFDS builders share.

``--manual-dir`` layout (the organisers' archives, extracted side by side)::

    ASVspoof2021_LA_eval/flac/LA_E_*.flac                      (181,566 files)
    ASVspoof2021_DF_eval/flac/DF_E_*.flac                      (611,829 files), or as shipped in
    ASVspoof2021_DF_eval_part00..03/ASVspoof2021_DF_eval/flac/  four parts (both are accepted)
    keys/LA/CM/trial_metadata.txt, keys/LA/ASV/trial_metadata.txt,
    keys/LA/ASV/ASVTorch_Kaldi/score.txt, keys/DF/CM/trial_metadata.txt

One split, ``eval``, holding every trial of the key file (all three subsets ``eval``,
``progress``, ``hidden``: the organisers' score file covers them all); every key column is a
feature (``trial`` is ``utt_id``, ``label`` the 0 spoof / 1 bona fide class label). The
key files the build used are copied to ``DATA_DIR/<name>/<version>/keys/`` so that
evaluation needs only the data dir.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from rawnet2_jax.audio import load_pcm16
from rawnet2_jax.data import keys2021 as K
from rawnet2_jax.data import tfds_common as C
from rawnet2_jax.errors import DataError

DOWNLOAD_URL = "https://www.asvspoof.org/index2021.html"
#: Key columns stored under the standard feature names.
_STANDARD = {"trial": "utt_id", "speaker": "speaker", "label": "label"}

CITATION = """@article{liu2023asvspoof,
  title={ASVspoof 2021: Towards spoofed and deepfake speech detection in the wild},
  author={Liu, Xuechen and Wang, Xin and Sahidullah, Md and Patino, Jose and Delgado, H{\\'e}ctor and
          Kinnunen, Tomi and Todisco, Massimiliano and Yamagishi, Junichi and Evans, Nicholas and
          Nautsch, Andreas and Lee, Kong Aik},
  journal={IEEE/ACM Transactions on Audio, Speech, and Language Processing}, volume={31},
  pages={2507--2522}, year={2023}}"""


def dataset_name(track: K.Track) -> str:
    return f"asvspoof2021_{track.name.lower()}"


def extra_feature_names(track: K.Track) -> list[str]:
    return [c for c in track.cm_columns if c not in _STANDARD]


def features(track: K.Track):
    import tensorflow_datasets as tfds

    return C.audio_features({c: tfds.features.Text(doc=f"key column '{c}'") for c in extra_feature_names(track)})


def audio_dirs(manual_dir: str | os.PathLike, track: K.Track) -> list[Path]:
    """The ``flac`` folders of the track (one, or the DF parts)."""
    root = Path(manual_dir).expanduser()
    name = f"ASVspoof2021_{track.name}_eval"
    dirs = [root / name / "flac"] + sorted(root.glob(f"{name}_part*/{name}/flac"))
    found = [d for d in dirs if d.is_dir()]
    if not found:
        raise DataError(
            f"{root}: no {name}/flac/ (nor {name}_part00/{name}/flac/ ...) here; extract the "
            f"organisers' {name} archives into the manual dir"
        )
    return found


def audio_index(manual_dir: str | os.PathLike, track: K.Track) -> dict[str, str]:
    """``{trial: flac path}`` over all audio folders; a trial in two folders is an error.
    (Plain strings: 611,829 ``Path`` objects would cost ~100 MB more.)"""
    index: dict[str, str] = {}
    for d in audio_dirs(manual_dir, track):
        with os.scandir(d) as it:
            for entry in it:
                if not entry.name.endswith(".flac"):
                    continue
                trial = entry.name[: -len(".flac")]
                if trial in index:
                    raise DataError(f"{d / entry.name}: trial {trial} is also in {os.path.dirname(index[trial])}; "
                                    "extract each archive once")
                index[trial] = entry.path
    return index


def read_keys(manual_dir: str | os.PathLike, track: K.Track) -> tuple[K.KeyTable, K.KeyPaths]:
    paths = K.key_paths(K.find_keys_root(manual_dir, track), track)
    keys = K.parse_cm_keys(paths.cm, track)
    if track.has_tdcf:  # fail now, not at evaluation time, on a broken ASV key package
        K.parse_asv_keys(paths.asv, paths.asv_scores)
    return keys, paths


def check_audio(keys: K.KeyTable, index: dict[str, str], track: K.Track, dirs: list[Path]) -> list[str]:
    """Audio path of every key trial; missing or unlisted files are one error."""
    trials = keys["trial"].tolist()
    missing = [t for t in trials if t not in index]
    where = ", ".join(os.fspath(d) for d in dirs)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{dataset_name(track)}: missing audio file {dirs[0] / (missing[0] + '.flac')}{more} for the trials "
            f"of {keys.path}; is the corpus fully extracted?"
        )
    if len(index) != len(trials):
        listed = set(trials)
        stray = next(p for t, p in index.items() if t not in listed)
        raise DataError(
            f"{dataset_name(track)}: {len(index):,} flac files in {where} but {keys.path} lists {len(trials):,} "
            f"trials ({os.path.basename(stray)} is not in it); use the key file of the same track and release"
        )
    return [index[t] for t in trials]


def _make_example(i: int, *, paths: list[str], keys: K.KeyTable):
    # Rows are read from the key columns by index: 611,829 per-row dicts would cost ~0.5 GB.
    pcm = load_pcm16(paths[i], max_seconds=None, on_silent="warn")
    fields = {_STANDARD.get(k, k): str(col[i]) for k, col in keys.columns.items()}
    fields["label"] = 1 if fields["label"] == "bonafide" else 0
    return fields["utt_id"], C.pcm_example(pcm, **fields)


class Asvspoof2021Mixin:
    """Version, ``_info`` and ``_shard_iterators_per_split`` of both builders (each sets ``TRACK``
    and its ``MANUAL_DOWNLOAD_INSTRUCTIONS``)."""

    TRACK: K.Track
    SHARD_SIZE = C.DEFAULT_SHARD_SIZE
    VERSION = "1.0.0"  # TFDS reads it as tfds.core.Version (a string keeps tfds out of this import)
    RELEASE_NOTES = {"1.0.0": "Initial release: array_record, every key column a feature."}

    def _info(self):
        t = self.TRACK
        return C.dataset_info(
            self,
            description=f"ASVspoof 2021 {t.name} evaluation data (all {t.official_count:,} trials of the key file, "
            "subsets eval/progress/hidden), 16 kHz int16 PCM at native length, every key column a feature.",
            features=features(t),
            homepage=DOWNLOAD_URL,
            citation=CITATION,
        )

    def _shard_iterators_per_split(self, dl_manager):
        t = self.TRACK
        keys, _ = read_keys(dl_manager.manual_dir, t)
        dirs = audio_dirs(dl_manager.manual_dir, t)
        paths = check_audio(keys, audio_index(dl_manager.manual_dir, t), t, dirs)
        make = functools.partial(_make_example, paths=paths, keys=keys)
        return {"eval": C.shard_generators(range(len(keys)), make, self.SHARD_SIZE, f"{dataset_name(t)}/eval")}


def copy_keys(paths: K.KeyPaths, keys_root: Path, dest: Path) -> Path:
    """Copy the key files to ``dest/keys`` (through a temporary folder, renamed when complete)."""
    final = dest / "keys"
    tmp = dest / "keys.incomplete"
    shutil.rmtree(tmp, ignore_errors=True)
    for p in (paths.cm, paths.asv, paths.asv_scores):
        if p is not None:
            target = tmp / p.relative_to(keys_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def build(builder_cls: type, manual_dir, data_dir, *, overwrite: bool = False):
    """Build (or reuse) the dataset; check the count against the keys; copy the keys next to it."""
    track = builder_cls.TRACK
    keys, paths = read_keys(manual_dir, track)
    n = len(keys)
    if n != track.official_count:
        C.log.info("%s: %d trials in the keys, the official release has %d (subset or test corpus)",
                   dataset_name(track), n, track.official_count)
    builder = C.build(builder_cls, manual_dir=manual_dir, data_dir=data_dir, expected_counts={"eval": n},
                      overwrite=overwrite)
    copy_keys(paths, K.find_keys_root(manual_dir, track), Path(builder.data_dir))
    return builder


def built_keys_dir(data_dir: str | os.PathLike, name: str) -> Path:
    """``DATA_DIR/<name>/<version>/keys`` of a built 2021 dataset, or a DataError saying how to get it."""
    root = Path(data_dir) / name
    versions = sorted(p for p in root.glob("*/keys") if p.is_dir()) if root.is_dir() else []
    if not versions:
        raise DataError(
            f"{name} in {data_dir} has no copy of the organisers' keys; run: python -m rawnet2_jax.data build "
            f"{name} --manual-dir DIR --data-dir {data_dir}"
        )
    return versions[-1]
