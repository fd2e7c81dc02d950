"""Training RawNet2 in JAX: ``python -m train --config {caa_plateau,tak2021,demo}``.

Modules:
  configs   TrainConfig / PlateauConfig presets (frozen dataclasses holding a ModelConfig)
  optim     optax chain = torch clip_grad_norm_ + Adam(weight_decay) (coupled L2), with an
            injectable LR; ReduceLROnPlateau state machine (torch semantics); early stopping
  state     TrainState (arrays, a pytree) + HostState (JSON: plateau, selection, data position)
  step      make_train_step / make_eval_step (pure, jitted), weighted CE with torch semantics
  loop      train(): epochs, dev eval (loss, EER, min t-DCF), selection on dev, orbax
            checkpoints (latest + best), exact resume, logging, final eval, plots
  sharding  data parallel Mesh / NamedSharding, multi-host init, global batch assembly
  testing   tiny configs and in-memory records for tests
"""
