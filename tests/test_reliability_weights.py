"""Fault injection: weight files of the wrong kind say what was expected. Rows of docs/reliability.md."""

from __future__ import annotations

import pytest
import torch

from nstlib.core.errors import WeightsError
from nstlib.core.features import random_weights
from nstlib.io.weights import load_weights


def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    return random_weights(seed).state_dict

# --- Weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("text", "Expected torchvision's vgg19-dcbb9e9d.pth"),
        ("list", "expected a VGG state_dict (a dict of tensors), got list"),
        ("no conv5_4", "missing 34.weight"),
        ("strings", "0.weight is a str, not a tensor"),
        ("nan", "contains NaN or infinite values"),
    ],
)
def test_wrong_weight_files_say_what_was_expected(tmp_path, case: str, expected: str) -> None:
    path = tmp_path / f"{case}.pth"
    if case == "text":
        path.write_text("this is not a checkpoint")
    elif case == "list":
        torch.save([1, 2, 3], path)
    elif case == "no conv5_4":  # 15 convolutions: neither VGG19 (16) nor VGG16 (13)
        torch.save({k: v for k, v in random_state_dict(0).items() if not k.startswith("34.")}, path)
    elif case == "strings":
        torch.save({k: "x" for k in random_state_dict(0)}, path)
    else:
        state = random_state_dict(0)
        state["28.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_weights(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)
