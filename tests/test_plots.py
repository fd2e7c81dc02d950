import numpy as np
import pytest

from rawnet2_jax import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(2, 1, 200), rng.normal(-1, 1.5, 300)


@pytest.mark.slow
def test_det_curve_png(tmp_path, scores):
    b, s = scores
    out = plots.plot_det_curve(b, s, tmp_path / "a" / "det.png", label="sys")
    assert _is_png(tmp_path / "a" / "det.png") and out.endswith("det.png")
    # Several systems on one plot; degenerate scores (perfect, constant) still plot.
    plots.plot_det_curve(
        {"A01": (b, s[:50]), "perfect": ([5.0, 6.0], [-1.0]), "constant": (np.zeros(3), np.zeros(4))},
        path=tmp_path / "det2.png",
    )
    assert _is_png(tmp_path / "det2.png")


def test_probit_axes():
    assert plots._probit([0.5])[0] == pytest.approx(0.0)
    assert plots._probit([0.975])[0] == pytest.approx(1.959964, abs=1e-5)
    assert np.isfinite(plots._probit([0.0, 1.0])).all()


@pytest.mark.slow
def test_score_histogram_png(tmp_path, scores):
    b, s = scores
    plots.plot_score_histogram(b, s, tmp_path / "h.png", threshold=0.3)
    assert _is_png(tmp_path / "h.png")
    plots.plot_score_histogram([1.0, 1.0], [1.0], tmp_path / "h2.png")  # constant scores
    assert _is_png(tmp_path / "h2.png")


@pytest.mark.slow
def test_learning_curves_png(tmp_path):
    records = [
        {"epoch": i + 1, "train_loss": 1 / (i + 1), "dev_loss": 1.1 / (i + 1), "dev_eer": 10 / (i + 1), "lr": 1e-4 / 2 ** (i // 3),
         "dev_min_tdcf": 0.5 / (i + 1) if i else None}
        for i in range(8)
    ]
    plots.plot_learning_curves(records, tmp_path / "lc.png", title="demo")
    assert _is_png(tmp_path / "lc.png")
    # Missing keys, None and NaN values, a single epoch: still a valid PNG.
    plots.plot_learning_curves([{"loss": 0.7, "dev_eer": None}], tmp_path / "lc1.png")
    plots.plot_learning_curves([{"train_loss": float("nan")}, {"learning_rate": 1e-3}], tmp_path / "lc2.png")
    plots.plot_learning_curves([], tmp_path / "lc3.png")
    for name in ("lc1.png", "lc2.png", "lc3.png"):
        assert _is_png(tmp_path / name)
