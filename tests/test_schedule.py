"""PlateauState/plateau_step reproduce torch ReduceLROnPlateau; early stopping."""

import math

import numpy as np
import pytest

from train.configs import PlateauConfig
from train.optim import EarlyStopState, PlateauState, early_stop_update, plateau_init, plateau_step, should_stop

torch = pytest.importorskip("torch")

SEQUENCES = {
    "plateau": [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
    "improving": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    "oscillating": [1.0, 1.1, 0.95, 1.2, 0.99, 0.94, 0.96, 0.97, 0.98, 0.99, 0.93, 1.0, 1.0, 1.0, 1.0, 1.0],
    # Improvements smaller than the relative threshold 1e-4 count as bad epochs.
    "threshold_edge": [1.0, 0.99995, 0.9999, 0.99989, 0.99985, 0.9998, 0.99979, 0.99978, 0.99977, 0.9997, 0.9996],
    "exact_threshold": [1.0, 1.0 * (1 - 1e-4), 1.0 * (1 - 1e-4) * (1 - 1e-4), 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    "increasing": [0.1 * i for i in range(1, 20)],
    "nan": [1.0, float("nan"), 0.9, float("nan"), float("nan"), float("nan"), float("nan"), 0.5],
    "min_lr_floor": [1.0] * 40,
}

CONFIGS = [
    PlateauConfig(patience=3),
    PlateauConfig(patience=0),
    PlateauConfig(patience=2, cooldown=2),
    PlateauConfig(patience=1, factor=0.5, min_lr=2e-6),
    PlateauConfig(patience=2, threshold_mode="abs", threshold=0.01),
    PlateauConfig(patience=1, mode="max"),
    PlateauConfig(patience=1, factor=0.5, min_lr=1e-4 * 0.5**3 - 1e-9, eps=1e-8),
]


def torch_lrs(losses, cfg, lr=1e-4):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sch = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode=cfg.mode,
        factor=cfg.factor,
        patience=cfg.patience,
        threshold=cfg.threshold,
        threshold_mode=cfg.threshold_mode,
        cooldown=cfg.cooldown,
        min_lr=cfg.min_lr,
        eps=cfg.eps,
    )
    out = []
    for x in losses:
        sch.step(x)
        out.append(opt.param_groups[0]["lr"])
    return out


def ours(losses, cfg, lr=1e-4):
    st = plateau_init(lr, cfg)
    out = []
    for x in losses:
        st = plateau_step(st, x, cfg)
        # Round-trip through JSON every step (checkpoint form).
        st = PlateauState.from_json(st.to_json())
        out.append(st.lr)
    return out


@pytest.mark.parity
@pytest.mark.parametrize("seq", sorted(SEQUENCES))
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_lr_sequence_matches_torch(seq, ci):
    cfg = CONFIGS[ci]
    losses = SEQUENCES[seq]
    want = torch_lrs(losses, cfg)
    got = ours(losses, cfg)
    assert got == want, f"{seq} {cfg}: ours {got} torch {want}"


def test_random_sequences_match_torch():
    rng = np.random.default_rng(0)
    for trial in range(30):
        cfg = CONFIGS[trial % len(CONFIGS)]
        losses = list(np.round(rng.uniform(0.5, 1.0, size=25), 2).astype(float))
        assert ours(losses, cfg) == torch_lrs(losses, cfg)


def test_patience_counts_like_torch():
    """patience=3: the LR is cut at the 4th consecutive bad epoch, not the 3rd."""
    cfg = PlateauConfig(patience=3)
    lrs = ours([1.0, 1.0, 1.0, 1.0, 1.0], cfg)
    assert lrs == [1e-4, 1e-4, 1e-4, 1e-4, pytest.approx(1e-5)]


def test_early_stopping_and_selection():
    st = EarlyStopState()
    history = [0.3, 0.2, 0.25, 0.2, 0.19, 0.3, 0.3, 0.3, 0.1]
    stopped_at = None
    for epoch, x in enumerate(history):
        st, _ = early_stop_update(st, x, epoch, step=10 * (epoch + 1))
        if should_stop(st, patience=3):
            stopped_at = epoch
            break
    assert st.best == 0.19 and st.best_epoch == 4 and st.best_step == 50
    assert stopped_at == 7
    # Ties keep the earlier epoch; non-finite never becomes best.
    st = EarlyStopState()
    st, imp = early_stop_update(st, float("nan"), 0, 1)
    assert not imp and st.best is None
    st, _ = early_stop_update(st, 0.1, 1, 2)
    st, imp = early_stop_update(st, 0.1, 2, 3)
    assert not imp and st.best_epoch == 1
    assert not should_stop(st, None)
    assert math.isinf(PlateauState.from_json(plateau_init(1.0, PlateauConfig()).to_json()).best)
