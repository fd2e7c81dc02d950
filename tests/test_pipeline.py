import collections
import dataclasses

import numpy as np
import pytest

from rawnet2_jax.audio import fit_length, pcm16_to_float
from rawnet2_jax.data import pipeline as pl
from tests.data_fixtures import records_source


@dataclasses.dataclass(frozen=True)
class Cfg:
    num_samples: int = 1000
    pad_mode: str = "zero"


HOST = dict(process_index=0, process_count=1, local_device_count=1)


def _take(it, k):
    return [next(it) for _ in range(k)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_batch_contents_and_shapes():
    src = records_source(20)
    b = next(pl.train_batches(src, Cfg(), 4, seed=0, **HOST))
    assert b["audio"].shape == (4, 1000) and b["audio"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["mask"].dtype == bool and b["mask"].all()
    perm = pl.epoch_permutation(20, 0, 0)
    for row, i in enumerate(perm[:4]):
        assert b["utt_id"][row] == f"utt{i:05d}"
        assert b["label"][row] == i % 2
        np.testing.assert_array_equal(b["audio"][row], fit_length(pcm16_to_float(src[i]["audio"]), 1000, "zero"))


@pytest.mark.parametrize("mode", ["zero", "repeat"])
def test_pad_modes(mode):
    src = [{"audio": np.arange(1, 4, dtype=np.int16), "label": 1, "utt_id": "a"}]
    b = next(pl.eval_batches(src, Cfg(num_samples=7, pad_mode=mode), 1, **HOST))
    want = [1, 2, 3, 0, 0, 0, 0] if mode == "zero" else [1, 2, 3, 1, 2, 3, 1]
    np.testing.assert_allclose(b["audio"][0] * 32768, want)


def test_float_and_list_sources():
    src = [{"audio": np.full(5, 0.25, np.float32), "label": 0, "utt_id": b"x"}] * 3
    b = next(pl.eval_batches(src, Cfg(num_samples=5), 3, **HOST))
    np.testing.assert_array_equal(b["audio"], np.full((3, 5), 0.25, np.float32))
    assert list(b["utt_id"]) == ["x", "x", "x"]


def test_train_deterministic_and_epochs_differ():
    src = records_source(50)
    a = _take(pl.train_batches(src, Cfg(), 8, seed=3, **HOST), 12)
    b = _take(pl.train_batches(src, Cfg(), 8, seed=3, **HOST), 12)
    _same(a, b)
    c = _take(pl.train_batches(src, Cfg(), 8, seed=4, **HOST), 1)
    assert list(c[0]["utt_id"]) != list(a[0]["utt_id"])
    # 50 // 8 = 6 steps per epoch; epoch 0 and 1 use different orders, each without repeats
    e0 = np.concatenate([x["utt_id"] for x in a[:6]])
    e1 = np.concatenate([x["utt_id"] for x in a[6:12]])
    assert len(set(e0)) == 48 and len(set(e1)) == 48 and list(e0) != list(e1)


def test_resume_replays_exactly():
    src = records_source(30)
    it = pl.train_batches(src, Cfg(), 4, seed=1, num_epochs=3, **HOST)
    assert it.steps_per_epoch == 7 and it.state == {"epoch": 0, "step": 0}
    full = list(it)
    assert len(full) == 21 and it.state == {"epoch": 3, "step": 0}
    it = pl.train_batches(src, Cfg(), 4, seed=1, num_epochs=3, **HOST)
    _take(it, 9)
    state = it.state
    assert state == {"epoch": 1, "step": 2}
    it.close()
    resumed = list(pl.train_batches(src, Cfg(), 4, seed=1, start_epoch=state["epoch"], start_step=state["step"],
                                    num_epochs=2, **HOST))
    _same(resumed, full[9:])


def test_eval_exact_coverage_and_padding():
    src = records_source(23)
    batches = list(pl.eval_batches(src, Cfg(), 8, **HOST))
    assert len(batches) == pl.num_eval_batches(23, 8) == 3
    assert all(b["audio"].shape == (8, 1000) for b in batches)
    ids = np.concatenate([b["utt_id"][b["mask"]] for b in batches])
    assert list(ids) == [f"utt{i:05d}" for i in range(23)]  # once each, in order
    last = batches[-1]
    assert last["mask"].tolist() == [True] * 7 + [False]
    assert not last["audio"][7].any() and last["utt_id"][7] == ""


def test_multi_host_sharding():
    src = records_source(37)
    hosts = [list(pl.eval_batches(src, Cfg(), 8, process_index=p, process_count=2, local_device_count=2))
             for p in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == 5  # lock-step
    assert all(b["audio"].shape == (4, 1000) for h in hosts for b in h)
    ids = collections.Counter(u for h in hosts for b in h for u in b["utt_id"][b["mask"]])
    assert sorted(ids) == [f"utt{i:05d}" for i in range(37)] and set(ids.values()) == {1}
    # training: the hosts' halves of a global batch are disjoint and together the global batch
    t = [next(pl.train_batches(src, Cfg(), 8, seed=0, process_index=p, process_count=2, local_device_count=1))
         for p in range(2)]
    glob = next(pl.train_batches(src, Cfg(), 8, seed=0, **HOST))
    assert list(t[0]["utt_id"]) + list(t[1]["utt_id"]) == list(glob["utt_id"])


def test_batch_divisibility_errors():
    src = records_source(10)
    with pytest.raises(ValueError, match="local devices"):
        pl.train_batches(src, Cfg(), 6, seed=0, process_index=0, process_count=1, local_device_count=4)
    with pytest.raises(ValueError, match="processes"):
        pl.eval_batches(src, Cfg(), 5, process_index=0, process_count=2, local_device_count=1)
    with pytest.raises(ValueError, match="smaller than one batch"):
        pl.train_batches(src, Cfg(), 16, seed=0, **HOST)
    with pytest.raises(ValueError, match="start_step"):
        pl.train_batches(src, Cfg(), 4, seed=0, start_step=2, **HOST)


@pytest.mark.slow
def test_threads_and_workers_give_equal_results():
    # 1 in-process worker vs 4 threads vs 4 grain worker processes (eval shares _iterate)
    src = records_source(40)
    kw = dict(num_epochs=1, **HOST)
    one = list(pl.train_batches(src, Cfg(), 8, seed=5, num_threads=1, **kw))
    many = list(pl.train_batches(src, Cfg(), 8, seed=5, num_threads=4, **kw))
    procs = list(pl.train_batches(src, Cfg(), 8, seed=5, num_workers=4, **kw))
    _same(one, many)
    _same(one, procs)


def test_tfds_source(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from rawnet2_jax.data import asvspoof2019_la
    from tests.data_fixtures import write_la_tree

    exp = write_la_tree(tmp_path / "c")
    b = asvspoof2019_la.build(tmp_path / "c", tmp_path / "d")
    src = b.as_data_source(split="eval")
    batches = list(pl.eval_batches(src, Cfg(num_samples=2000, pad_mode="repeat"), 4, **HOST))
    ids = np.concatenate([x["utt_id"][x["mask"]] for x in batches])
    assert list(ids) == [r["utt_id"] for r in exp["eval"]]
    labels = np.concatenate([x["label"][x["mask"]] for x in batches])
    assert list(labels) == [r["label"] for r in exp["eval"]]
    first = fit_length(pcm16_to_float(exp["eval"][0]["pcm"]), 2000, "repeat")
    np.testing.assert_array_equal(batches[0]["audio"][0], first)
