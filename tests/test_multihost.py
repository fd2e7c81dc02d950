"""Multi-process training on one machine: two processes on 127.0.0.1 with one CPU device
each (gloo collectives), stopped by SIGTERM on one process, killed (kill -9 of one
process), resumed, and compared with one process holding two virtual CPU devices.

One chain of runs in one workdir, shared by the tests of this module (module fixture):

1. SIGTERM to process 1 right after its checkpoint at step 2: every process saves the
   same step (JAX's preemption sync point) and exits 143;
2. resume; SIGKILL of process 1 right after its mid-epoch checkpoint at step 6: process 0
   ends with one ``error: process 0: ...`` line, exit 1, no traceback;
3. resume to the end: the same parameters, dev EER, model selection and eval EER as the
   uninterrupted one-process, two-device reference (run beside step 1).

Each process scores only its shard of the dev and eval splits; the score files must equal
the one-process files line by line (same utterances in the same order, scores to 1e-5).

Then the CLIs with the chain's best model: `evaluate` (2019 LA, 2021 LA) and `benchmark` on
one pair of processes, ending with a failure on process 0 only; a kill -9 of one process
during `evaluate`.

Kept fast: a tiny model, 16 / 12 / 12 utterances, the suite's cheap XLA flags (conftest's
``FAST_XLA_FLAGS``, both sides alike), one persistent compilation cache that every process
writes (JAX lets only process 0 write it; its keys differ by process, so process 1 would
compile again in every resumed run), TensorBoard left out (tensorboardX: 0.6 s of imports
per start).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST_XLA_FLAGS, XLA_MODE_ENV

pytestmark = pytest.mark.long_file  # scheduled first in a parallel run (conftest)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 30  # RAWNET2_DISTRIBUTED_TIMEOUT: how long a silent peer counts as alive
N_TRAIN, BATCH, EPOCHS, CKPT_EVERY = 16, 4, 2, 2  # 4 steps an epoch, 8 in all
N_DEV = N_EVAL = 12  # not a multiple of the eval batch (8): the last batch is padded

_SCRIPT = textwrap.dedent(
    f"""
    import json, os, signal, sys, time
    sys.modules["tensorboardX"] = None  # not under test; 0.6 s of imports
    import numpy as np
    from rawnet2_jax.processes import maybe_initialize_distributed
    maybe_initialize_distributed()
    import jax
    from jax._src import compiler, distributed
    _write = compiler._cache_write
    def write_from_every_process(*a, **k):  # JAX writes the cache from process 0 only; its keys
        pid = distributed.global_state.process_id  # differ by process, so the writes cannot clash
        distributed.global_state.process_id = 0
        try:
            return _write(*a, **k)
        finally:
            distributed.global_state.process_id = pid
    compiler._cache_write = write_from_every_process
    import train.loop as loop
    from train.__main__ import run
    from train.testing import synthetic_sources, tiny_train_config
    workdir, out, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    me = jax.process_index()
    if plan and me == plan["process"]:
        def fault(name, step):
            if name == plan["point"] and step == plan["step"]:
                print(f"signal {{plan['signal']}} at {{time.time():.3f}}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), getattr(signal, "SIG" + plan["signal"]))
        loop._fault_point = fault
    cfg = tiny_train_config(epochs={EPOCHS}, batch_size={BATCH}, checkpoint_every_steps={CKPT_EVERY})
    captured = {{}}
    real_train = loop.train
    def keep_result(*a, **k):
        captured["res"] = res = real_train(*a, **k)
        return res
    loop.train = keep_result  # what `run` calls: the final state comes back to this script
    rc = run(cfg, workdir, sources=synthetic_sources({N_TRAIN}, {N_DEV}, {N_EVAL}), quiet=True)
    if rc == 0:
        res = captured["res"]
        leaves = jax.tree_util.tree_leaves_with_path(res.final_state.variables())
        np.savez(f"{{out}}.{{me}}.npz",
                 **{{jax.tree_util.keystr(p): np.asarray(x.addressable_data(0)) for p, x in leaves}})
        with open(f"{{out}}.{{me}}.json", "w") as f:
            json.dump({{"best_dev_eer": res.best_dev_eer, "best_step": res.best_step, "eval_eer": res.eval["eer"],
                       "steps": res.steps_done, "devices": jax.device_count(),
                       "processes": jax.process_count()}}, f)
    print(f"exit {{rc}} at {{time.time():.3f}}", file=sys.stderr, flush=True)
    sys.exit(rc)
    """
)


def _env(cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
    fast = FAST_XLA_FLAGS if os.environ.get(XLA_MODE_ENV) == "fast" else ()
    flags = " ".join([*fast, extra.pop("XLA_FLAGS", "")]).strip()
    return dict(env, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=flags, JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                **extra)


def _free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()


def _start(workdir: Path, out: Path, env: dict, plan: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, str(workdir), str(out), json.dumps(plan or {})],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pair_envs(cache: Path) -> list[dict]:
    port = _free_port()
    return [_env(cache, RAWNET2_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(i), RAWNET2_DISTRIBUTED_TIMEOUT=str(TIMEOUT_S)) for i in range(2)]


def _pair(workdir: Path, out: Path, cache: Path, plan: dict | None = None) -> list[subprocess.Popen]:
    return [_start(workdir, out, env, plan) for env in _pair_envs(cache)]


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[dict]:
    """Wait for all; each: returncode, stderr, ``ended`` (wall-clock time it was seen gone)."""
    import threading

    results = [dict() for _ in procs]

    def wait(p, r):
        r["out"], r["err"] = p.communicate()
        r["rc"], r["ended"] = p.returncode, time.time()

    threads = [threading.Thread(target=wait, args=(p, r), daemon=True) for p, r in zip(procs, results)]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    if any(t.is_alive() for t in threads):
        for p in procs:
            p.kill()
        pytest.fail(f"processes still running after {timeout} s: {[r.get('err', '')[-2000:] for r in results]}")
    return results


def _sent_at(err: str) -> float:
    line = next(ln for ln in err.splitlines() if ln.startswith("signal "))
    return float(line.split(" at ")[1])


def _exit_at(err: str) -> float:
    return float(next(ln for ln in err.splitlines() if ln.startswith("exit ")).split(" at ")[1])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    cache, wd = root / "xla-cache", root / "multi"
    t0 = time.time()
    single = _start(root / "single", root / "single",
                    _env(cache, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    term = _finish(_pair(wd, root / "term", cache,
                         {"process": 1, "point": "after_checkpoint", "step": 2, "signal": "TERM"}))
    t1 = time.time()
    kill = _finish(_pair(wd, root / "kill", cache,
                         {"process": 1, "point": "after_checkpoint", "step": 6, "signal": "KILL"}))
    t2 = time.time()
    resume = _finish(_pair(wd, root / "multi", cache))
    t3 = time.time()
    ref = _finish([single])[0]
    print(f"\nmultihost chain: SIGTERM run {t1 - t0:.0f} s, kill run {t2 - t1:.0f} s, resume {t3 - t2:.0f} s; "
          f"the 1-process reference (started with the first) ended after {_exit_at(ref['err']) - t0:.0f} s")
    return dict(root=root, wd=wd, term=term, kill=kill, resume=resume, ref=ref)


def _clean(err: str) -> bool:
    return "Traceback" not in err and "Check failed" not in err and "barrier" not in err.lower()


@pytest.mark.slow
def test_sigterm_on_one_process_saves_on_all_and_exits_143(chain):
    for i, r in enumerate(chain["term"]):
        assert r["rc"] == 128 + signal.SIGTERM, (i, r["err"][-3000:])
        assert _clean(r["err"]), r["err"][-3000:]
    # Both processes saved the same step, the preemption sync point past step 2.
    lines = [next(ln for ln in r["err"].splitlines() if ln.startswith("stopped: SIGTERM received")) for r in chain["term"]]
    assert lines[0] == lines[1], lines
    saved = int(lines[0].split("saved checkpoint ")[1].split()[0])
    assert saved > 2, lines[0]
    assert f"resumed from {chain['wd'] / 'checkpoints' / str(saved)}" in (chain["wd"] / "train.log").read_text()


@pytest.mark.slow
def test_kill_9_of_one_process_ends_the_other_with_one_line(chain):
    survivor, killed = chain["kill"]
    assert killed["rc"] == -signal.SIGKILL, killed["err"][-3000:]
    assert survivor["rc"] == 1, survivor["err"][-3000:]
    assert _clean(survivor["err"]), survivor["err"][-3000:]
    errors = [ln for ln in survivor["err"].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: process 0: "), survivor["err"][-3000:]
    assert "re-run the same command on every process" in errors[0], errors[0]
    waited = survivor["ended"] - _sent_at(killed["err"])
    assert waited < TIMEOUT_S + 10, f"the survivor ended {waited:.1f} s after the kill (timeout {TIMEOUT_S} s)"


@pytest.mark.slow
def test_resumed_run_equals_one_process_with_two_devices(chain):
    for r in chain["resume"] + [chain["ref"]]:
        assert r["rc"] == 0, r["err"][-3000:]
        assert _clean(r["err"]), r["err"][-3000:]
    root = chain["root"]
    info = {n: json.loads((root / f"{n}.json").read_text()) for n in ("multi.0", "multi.1", "single.0")}
    assert [info[n]["processes"] for n in info] == [2, 2, 1]
    assert all(info[n]["devices"] == 2 and info[n]["steps"] == EPOCHS * N_TRAIN // BATCH for n in info), info
    ref = np.load(root / "single.0.npz")
    for name in ("multi.0", "multi.1"):
        got = np.load(root / f"{name}.npz")
        assert sorted(got.files) == sorted(ref.files)
        worst = max(float(np.max(np.abs(got[k] - ref[k]) / np.maximum(np.abs(ref[k]), 1e-6))) for k in ref.files)
        # Two processes reduce over gloo, one process over its two devices: the same sums,
        # possibly in another order; SIGTERM + kill -9 + two resumes on top. Measured on the
        # 2-core CPU machine: 0 (bitwise equal), scores too; the bound leaves room for
        # reduction orders of other collectives.
        assert worst < 1e-4, f"{name}: state max relative difference {worst:.3g} vs 1 process x 2 devices"
        same = all(np.array_equal(got[k], ref[k]) for k in ref.files)
        print(f"\n{name}: state max relative difference {worst:.3g} (bitwise equal: {same})")
        # Model selection comes from the dev scores: the same decisions, the same numbers.
        for key in ("best_dev_eer", "best_step", "eval_eer"):
            assert info[name][key] == info["single.0"][key], (name, key, info[name], info["single.0"])


@pytest.mark.slow
def test_host_side_outputs_written_once_by_the_primary(chain):
    from rawnet2_jax.checkpoint import load_pretrained

    wd, root = chain["wd"], chain["root"]
    for split, n in (("dev", N_DEV), ("eval", N_EVAL)):
        name = "dev_scores.txt" if split == "dev" else "scores_asvspoof2019_la_eval.txt"
        ids = [line.split()[0] for line in (wd / "scores" / name).read_text().splitlines()]
        assert len(ids) == len(set(ids)) == n, ids
    best = json.loads((root / "multi.0.json").read_text())["best_step"]
    meta = json.loads((wd / "best_model" / "metadata.json").read_text())
    assert meta["step"] == best
    load_pretrained(wd / "best_model")  # the manifest checks out
    assert not list(wd.glob(".best_model.tmp-*"))
    assert json.loads((wd / "final.json").read_text())["best_step"] == best
    # metrics.jsonl was cut back at each resume: one record per epoch
    epochs = [json.loads(ln)["epoch"] for ln in (wd / "metrics.jsonl").read_text().splitlines()
              if json.loads(ln)["type"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1)), epochs


@pytest.mark.slow
def test_sharded_scores_equal_the_one_process_files(chain):
    """Each process scored its shard; the gathered files hold what one process writes."""
    for name in ("dev_scores.txt", "scores_asvspoof2019_la_eval.txt"):
        got = [ln.split() for ln in (chain["wd"] / "scores" / name).read_text().splitlines()]
        want = [ln.split() for ln in (chain["root"] / "single" / "scores" / name).read_text().splitlines()]
        assert [g[:-1] for g in got] == [w[:-1] for w in want], name  # utterance, attack, key: same order
        a, b = (np.asarray([float(r[-1]) for r in rows]) for rows in (got, want))
        worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3)))
        assert worst < 1e-5, f"{name}: score max relative difference {worst:.3g}"
        print(f"\n{name}: {len(got)} lines, score max relative difference {worst:.3g}")


# --------------------------------------------------------------------------- the CLIs over processes

# Runs `rawnet2-jax` commands one after the other in one process of a pair (one start,
# one jax.distributed set-up, the model compiled once). plan: on process `process`, the
# loaded model's call number `call` of the LAST command returns NaN logits (a UserError on
# that process only) or kills the process (SIGKILL).
_CLI_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import numpy as np
    from rawnet2_jax import cli
    commands, plan = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    load = cli._load_model
    def faulty_load(directory):
        model, calls = load(directory), [0]
        real = model.logits
        def logits(x):
            calls[0] += 1
            if calls[0] == plan["call"]:
                print(f"fault {plan['fault']} at {time.time():.3f}", file=sys.stderr, flush=True)
                if plan["fault"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                return np.full((len(x), 2), np.nan, np.float32)
            return real(x)
        model.logits = logits
        return model
    for i, argv in enumerate(commands):
        if plan and i == len(commands) - 1 and int(os.environ["JAX_PROCESS_ID"]) == plan["process"]:
            cli._load_model = faulty_load
        rc = cli.main(argv)
        print(f"command {i} exit {rc} at {time.time():.3f}", file=sys.stderr, flush=True)
        if rc:
            sys.exit(rc)
    """
)


@pytest.fixture(scope="module")
def cli_data(chain):
    """The chain's trained tiny model (its best_model/: no second model to compile an init
    for) and two built datasets: ASVspoof 2019 LA (eval: 9) and 2021 LA (14 trials)."""
    from rawnet2_jax.data import asvspoof2019_la, asvspoof2021_la
    from tests.data_fixtures import la21_asv_lines, la21_key_lines, write_2021_audio, write_2021_keys, write_la_tree

    root = chain["root"] / "cli"
    recs = write_la_tree(root / "corpus", n={"train": 3, "dev": 3, "eval": 9})["eval"]
    lines = la21_key_lines(14, seed=4)
    write_2021_keys(root / "corpus", "LA", lines, la21_asv_lines(120, seed=4))
    pcm21 = write_2021_audio(root / "corpus", "LA", [ln.split()[1] for ln in lines], seed=4)
    asvspoof2019_la.build(root / "corpus", root / "data")
    asvspoof2021_la.build(root / "corpus", root / "data")
    (root / "model").symlink_to(chain["wd"] / "best_model")
    want = {"la19": [(r["utt_id"], r["pcm"]) for r in recs], "la21": list(pcm21.items())}
    return root, want


def _cli_commands(root: Path, tag: str) -> list[list[str]]:
    common = ["--checkpoint", str(root / "model"), "--data-dir", str(root / "data"), "--batch-size", "4",
              "--no-progress"]
    return [["evaluate", "--split", "eval", "--out", str(root / tag / "la19"), *common],
            ["evaluate", "--dataset", "asvspoof2021_la", "--out", str(root / tag / "la21"), *common],
            ["benchmark", "--out", str(root / tag / "bench"), *common]]


def _cli_pair(root: Path, commands: list, plan: dict | None = None, timeout_s: int = TIMEOUT_S) -> list[dict]:
    scratch = root / "tmp"  # where the other processes' scratch copies go (and must be gone afterwards)
    scratch.mkdir(exist_ok=True)
    envs = [dict(env, RAWNET2_DISTRIBUTED_TIMEOUT=str(timeout_s), TMPDIR=str(scratch))
            for env in _pair_envs(root.parent / "xla-cache")]
    procs = [subprocess.Popen([sys.executable, "-c", _CLI_SCRIPT, json.dumps(commands), json.dumps(plan or {})],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in envs]
    return _finish(procs, timeout=300)


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def _lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()]


@pytest.mark.slow
def test_evaluate_and_benchmark_on_two_processes_then_one_fails(cli_data):
    """`evaluate` (2019 LA, 2021 LA) and `benchmark` with RAWNET2_DISTRIBUTED=1 on two
    processes: each scores its shard, process 0 writes every file, each utterance once with
    the model's score. Then a command fails on process 0 only (non-finite logits, a
    UserError): process 1 ends at once with `error: process 0 failed: <its line>`, both
    exit 1, no traceback."""
    from rawnet2_jax.audio import fit_length, pcm16_to_float
    from rawnet2_jax.checkpoint import load_pretrained

    root, want = cli_data
    commands = _cli_commands(root, "two")
    t0 = time.time()
    p0, p1 = _cli_pair(root, commands + [_cli_commands(root, "failed")[1]], {"process": 0, "call": 2, "fault": "nan"})
    marks = [ln.split(" at ")[0] + f" {float(ln.split(' at ')[1]) - t0:.1f} s" for ln in p0["err"].splitlines()
             if ln.startswith(("command ", "fault "))]
    print(f"\ntwo processes: {', '.join(marks)}; process 1 ended after {p1['ended'] - t0:.1f} s")

    for r in (p0, p1):
        assert r["rc"] == 1, r["err"][-3000:]
        assert _clean(r["err"]), r["err"][-3000:]
        assert [f"command {i} exit 0" in r["err"] for i in range(3)] == [True] * 3, r["err"][-3000:]
    own, seen = _error_lines(p0["err"]), _error_lines(p1["err"])
    assert len(own) == 1 and "non-finite logits" in own[0], p0["err"][-3000:]
    assert seen == [f"error: process 0 failed: {own[0][len('error: '):]} (process 1 stopped with it)"], seen
    waited = p1["ended"] - _sent_at_fault(p0["err"])
    assert waited < 10, f"process 1 ended {waited:.1f} s after process 0 failed"
    assert "EER:" in p0["out"] and "Pooled" in p0["out"] and p1["out"] == "", (p0["out"], p1["out"])
    assert not list((root / "tmp").iterdir())  # process 1's scratch folders are gone

    two = root / "two"
    m = load_pretrained(root / "model")
    for name, f in (("la19", "scores_asvspoof2019_la_eval.txt"), ("la21", "scores_asvspoof2021_la.txt")):
        ids, pcm = zip(*want[name])
        x = np.stack([fit_length(pcm16_to_float(p), m.config.num_samples, m.config.pad_mode) for p in pcm])
        got = _lines(two / name / f)
        assert [g[0] for g in got] == list(ids), name  # every utterance once, in split order
        np.testing.assert_allclose([float(g[-1]) for g in got], m.scores(x), rtol=1e-4, atol=1e-5, err_msg=name)
        dataset = f.removeprefix("scores_").removesuffix(".txt").removesuffix("_eval")
        bench_file = two / "bench" / dataset / f
        assert bench_file.read_bytes() == (two / name / f).read_bytes(), bench_file  # benchmark scores alike
    assert sorted(p.name for p in (two / "la19").iterdir()) == sorted(
        [".lock", "scores_asvspoof2019_la_eval.txt", "summary.json", "per_attack.txt", "per_attack.csv", "det.png",
         "det_per_attack.png", "score_histogram.png"])  # .lock: the primary held --out while it ran
    assert sorted(p.name for p in (two / "la21").iterdir()) == sorted(
        [".lock", "scores_asvspoof2021_la.txt", "scores_asvspoof2021_la.txt.run", "tables_eval.txt", "tables_eval.csv",
         "tables_eval.json", "eer_by_condition_eval.png", "summary_eval.json"])
    bench = {r["dataset"]: r for r in json.loads((two / "bench" / "benchmark.json").read_text())["results"]}
    assert bench["asvspoof2019_la"]["eer"] == json.loads((two / "la19" / "summary.json").read_text())["eer"]  # %
    assert bench["asvspoof2021_la"]["eer"] == json.loads((two / "la21" / "summary_eval.json").read_text())["pooled_eer"]
    assert [bench[d]["status"] for d in ("in_the_wild", "asvspoof2021_df")] == ["skipped", "skipped"]


def _sent_at_fault(err: str) -> float:
    return float(next(ln for ln in err.splitlines() if ln.startswith("fault ")).split(" at ")[1])


@pytest.mark.slow
def test_kill_9_during_evaluate_ends_the_other_with_one_line(cli_data):
    timeout = 8
    root, _ = cli_data
    survivor, killed = _cli_pair(root, _cli_commands(root, "killed")[1:2],
                                 {"process": 1, "call": 2, "fault": "kill"}, timeout_s=timeout)
    assert killed["rc"] == -signal.SIGKILL, killed["err"][-3000:]
    assert survivor["rc"] == 1, survivor["err"][-3000:]
    assert _clean(survivor["err"]), survivor["err"][-3000:]
    errors = _error_lines(survivor["err"])
    assert len(errors) == 1 and errors[0].startswith("error: process 0: process 1 "), survivor["err"][-3000:]
    assert "check that process's log" in errors[0], errors[0]
    waited = survivor["ended"] - _sent_at_fault(killed["err"])
    assert waited < timeout + 10, f"the survivor ended {waited:.1f} s after the kill (timeout {timeout} s)"
