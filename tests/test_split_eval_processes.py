"""score_split over several processes, in one process: two threads play two processes whose
text exchange is a shared dict (the real one, the jax.distributed key-value store, is
exercised by tests/test_multihost.py)."""

import threading
import types

import numpy as np
import pytest

from rawnet2_jax.split_eval import score_split
from train.testing import synthetic_records

CONFIG = types.SimpleNamespace(num_samples=400, pad_mode="zero")


class _Hub:
    def __init__(self):
        self.values: dict = {}
        self.cond = threading.Condition()

    def put(self, key, value):
        with self.cond:
            self.values[key] = value
            self.cond.notify_all()

    def get(self, key):
        with self.cond:
            assert self.cond.wait_for(lambda: key in self.values, timeout=30), f"no {key}"
            return self.values[key]


class _Exchange:
    def __init__(self, procs, name):
        self.procs, self.name = procs, name

    def all_texts(self, step, text):
        hub = self.procs.hub
        hub.put((self.name, step, self.procs.index), text)
        return [hub.get((self.name, step, p)) for p in range(self.procs.count)]

    def primary_int(self, value):
        if self.procs.primary:
            self.procs.hub.put((self.name, "primary"), value)
        return self.procs.hub.get((self.name, "primary"))

    def close(self):
        pass


class _Processes:
    """Duck-types rawnet2_jax.processes.Processes."""

    def __init__(self, index, count, hub):
        self.index, self.count, self.local_devices, self.hub = index, count, 1, hub
        self._n = 0

    @property
    def primary(self):
        return self.index == 0

    def exchange(self, name):
        self._n += 1
        return _Exchange(self, (name, self._n))


class _Reads(list):
    """Records that note which indices were read."""

    def __init__(self, records):
        super().__init__(records)
        self.read: set[int] = set()

    def __getitem__(self, i):
        self.read.add(int(i))
        return list.__getitem__(self, i)


def _model(rows_seen):
    def logits(x):
        rows_seen.append(len(x))
        m = x.astype(np.float64).mean(axis=1)
        return np.stack([np.zeros_like(m), 1e3 * m], axis=1)

    return logits


def _score(out, count, start_lines=0):
    records = synthetic_records(13, seed=5, length=400)
    hub, results, sources, rows = _Hub(), {}, {}, {}

    def one(p):
        sources[p], rows[p] = _Reads(records), []
        d = out / f"p{p}"
        if start_lines and p == 0:  # an earlier, stopped run of the primary
            (d / "s.txt").parent.mkdir(parents=True, exist_ok=True)
            one_proc = (out / "ref" / "s.txt").read_text().splitlines(keepends=True)
            (d / "s.txt").write_text("".join(one_proc[:start_lines]))
        results[p] = score_split(_model(rows[p]), sources[p], batch_size=4, out_dir=d, score_file="s.txt",
                                 config=CONFIG, progress=False, score_format="asvspoof2019",
                                 processes=_Processes(p, count, hub) if count > 1 else None)

    threads = [threading.Thread(target=one, args=(p,)) for p in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == count
    return results, sources, rows


def test_each_process_scores_its_shard_and_gets_the_whole_file(tmp_path):
    ref, _, _ = _score(tmp_path / "one", 1)
    ref_text = ref[0].score_file.read_text()
    assert len(ref_text.splitlines()) == 13
    (tmp_path / "two" / "ref").mkdir(parents=True)
    (tmp_path / "two" / "ref" / "s.txt").write_text(ref_text)
    res, sources, rows = _score(tmp_path / "two", 2)
    for p in (0, 1):
        assert res[p].score_file.read_text() == ref_text, p  # same lines, same order, same scores
        assert rows[p] == [2, 2, 2, 2], rows[p]  # its half of each global batch of 4, 4 batches
    # Global batch k holds records 4k..4k+3; process p reads rows 4k+2p, 4k+2p+1 (no padding rows read).
    assert sources[0].read == {0, 1, 4, 5, 8, 9, 12}
    assert sources[1].read == {2, 3, 6, 7, 10, 11}


def test_resume_continues_after_the_primarys_lines(tmp_path):
    ref, _, _ = _score(tmp_path / "one", 1)
    (tmp_path / "two" / "ref").mkdir(parents=True)
    (tmp_path / "two" / "ref" / "s.txt").write_text(ref[0].score_file.read_text())
    res, sources, _ = _score(tmp_path / "two", 2, start_lines=5)
    assert res[0].num_resumed == res[1].num_resumed == 5
    assert res[0].score_file.read_text() == ref[0].score_file.read_text()
    assert min(sources[1].read) >= 5  # the others start where the primary's file stopped


class _CountingSource:
    """A built split that notes which record indices this thread's process read."""

    def __init__(self, source, reads: set):
        self.source, self.reads = source, reads

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads.add(int(i))
        return self.source[int(i)]

    def __getitems__(self, indices):
        self.reads.update(int(i) for i in indices)
        return [self.source[int(i)] for i in indices]


@pytest.mark.slow
def test_benchmark_on_two_processes_equals_one(tmp_path, monkeypatch):
    """`rawnet2-jax benchmark` (and so `evaluate` on 2021 LA and In-the-Wild, the same functions)
    over two processes: each reads only its rows of every global batch, the primary resumes
    a stopped 2021 score file, and its summary equals the one-process run's."""
    import json

    import pytest

    pytest.importorskip("tensorflow_datasets")
    import rawnet2_jax.data as data_mod
    from rawnet2_jax.benchmark import run_benchmark
    from rawnet2_jax.data import asvspoof2021_la, in_the_wild
    from tests.data_fixtures import la21_asv_lines, la21_key_lines, write_2021_audio, write_2021_keys, write_wild_tree
    from tests.test_scoring import FakeModel

    data = tmp_path / "data"
    la = la21_key_lines(22, seed=3)
    write_2021_keys(tmp_path / "c", "LA", la, la21_asv_lines(200, seed=3))
    write_2021_audio(tmp_path / "c", "LA", [ln.split()[1] for ln in la], seed=3)
    write_wild_tree(tmp_path / "c", count=7)
    for mod in (asvspoof2021_la, in_the_wild):
        mod.build(tmp_path / "c", data)
    datasets = ("asvspoof2019_la", "asvspoof2021_la", "in_the_wild")  # 2019 LA is not built: skipped
    one = run_benchmark(FakeModel(), data, tmp_path / "one", batch_size=4, progress=False, datasets=datasets)

    la_file = "asvspoof2021_la/scores_asvspoof2021_la.txt"
    stopped = (tmp_path / "one" / la_file).read_text().splitlines(keepends=True)[:10]
    (tmp_path / "two" / "p0" / la_file).parent.mkdir(parents=True)
    (tmp_path / "two" / "p0" / la_file).write_text("".join(stopped))  # the primary's earlier, stopped run
    real_source, reads, rows = data_mod.data_source, {}, {}
    monkeypatch.setattr(data_mod, "data_source", lambda name, split, d: _CountingSource(
        real_source(name, split, d), reads.setdefault((threading.current_thread().name, name), set())))
    hub, results, errors = _Hub(), {}, []

    def process(p):
        try:
            model = FakeModel()
            results[p] = run_benchmark(model, data, tmp_path / "two" / f"p{p}", batch_size=4, progress=False,
                                       datasets=datasets, processes=_Processes(p, 2, hub))
            rows[p] = {shape[0] for shape in model.shapes}
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=process, args=(p,), name=f"p{p}") for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results[1] is None and rows == {0: {2}, 1: {2}}, (results[1], rows)  # half of each batch of 4
    want = [{k: v for k, v in r.to_dict().items() if k != "out_dir"} for r in one]
    got = [{k: v for k, v in r.to_dict().items() if k != "out_dir"} for r in results[0]]
    assert got == want
    for f in (la_file, "in_the_wild/scores_in_the_wild_eval.txt"):
        assert (tmp_path / "two" / "p0" / f).read_bytes() == (tmp_path / "one" / f).read_bytes(), f
    assert json.loads((tmp_path / "two" / "p0" / "benchmark.json").read_text())["results"][1]["eer"] == want[1]["eer"]
    assert not list((tmp_path / "two" / "p1").glob("benchmark.*"))  # the summary comes from the primary only
    # Process 1 read only its rows of each global batch: 2k+2, 2k+3 of batch k, counted from
    # where the primary resumed (10 for 2021 LA); the primary's own reads also check its kept lines.
    for name, start, total in (("asvspoof2021_la", 10, 22), ("in_the_wild", 0, 7)):
        mine = reads[("p1", name)]
        assert mine and all(i >= start and (i - start) % 4 in (2, 3) for i in mine), (name, sorted(mine))
        scored_by_0 = {i for i in reads[("p0", name)] if i >= start and (i - start) % 4 in (0, 1)}
        assert scored_by_0 | mine == set(range(start, total)), name
