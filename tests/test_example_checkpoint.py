"""convert.example writes a checkpoint the converter accepts, with trained-looking BN stats."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_example_checkpoint_converts(tmp_path, capsys):
    from convert.__main__ import main as convert_main
    from convert.example import make_reference_checkpoint

    pt = make_reference_checkpoint(tmp_path / "base.pt", "asvspoof2021_baseline", seed=3, batches=1)
    sd = torch.load(pt, weights_only=True)  # the official layout is a bare state dict
    assert "first_bn.running_mean" in sd and "model_state_dict" not in sd
    # Running statistics moved away from their init (0 / 1): the check of the converted
    # model's BN statistics needs them to carry information.
    assert float(sd["first_bn.running_mean"].abs().max()) > 1e-3
    assert not np.allclose(sd["bn_before_gru.running_var"].numpy(), 1.0)

    out = tmp_path / "flax"
    assert convert_main([str(pt), str(out)]) == 0
    assert (out / "config.json").is_file()
    assert "asvspoof2021_baseline" in capsys.readouterr().out
