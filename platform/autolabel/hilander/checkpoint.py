"""A meta-trained LANDER from its checkpoint, without Lightning: ``autolabel cluster`` and ``assign`` load the model
and the calibration `fit hilander` stored, and start faster and leaner without importing the training stack."""

from __future__ import annotations

import os
from pathlib import Path

from autolabel.errors import CheckpointError
from autolabel.hilander.lander import LANDER

KIND = "hilander.lander"


def load_lander(path: str | os.PathLike, map_location: str = "cpu") -> tuple[LANDER, dict]:
    """The LANDER model and its hyperparameters from a checkpoint written by ``autolabel fit hilander``; ``hp``'s
    ``"calibration"`` holds the stored link calibration and tau (:class:`~autolabel.hilander.calibration.Calibration`
    as a dict, None for checkpoints written before calibration existed)."""
    from autolabel.engine.checkpoint_io import load_checkpoint

    p = Path(path)
    ckpt = load_checkpoint(p, map_location, what="Hi-LANDER checkpoint",
                           hint="train one with `autolabel fit hilander train_features=...`")  # fmt: skip
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if hp.get("kind") != KIND:
        found = hp.get("kind") or (", ".join(list(hp)[:5]) if hp else "no hyperparameters")
        raise CheckpointError(
            f"{p} is not a Hi-LANDER checkpoint (it holds {found}); pass a checkpoint written by `autolabel fit hilander`"
        )
    try:
        model = LANDER(hp["feature_dim"], **hp["model"])
        state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{p} is a damaged or incompatible Hi-LANDER checkpoint ({type(e).__name__}); "
                              "retrain it with `autolabel fit hilander`") from e  # fmt: skip
    from autolabel.hilander.calibration import read_calibration

    hp = dict(hp)
    cal = read_calibration(ckpt)
    hp["calibration"] = cal.to_dict() if cal is not None else None  # the tau + link map `fit hilander` calibrated
    return model.eval(), hp
