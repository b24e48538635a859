"""Fault injection: parameters rejected before any work, listing the valid choices. Rows of docs/reliability.md."""

from __future__ import annotations

import re

import pytest
import torch
from common import CONTENT, RUN, STYLE

from nstlib.api import stylize
from nstlib.core.errors import ParameterError

# --- Parameters: rejected before any work, listing the valid choices --------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"content_weight": -1.0}, "content_weight=-1.0: give a finite number >= 0"),
        ({"tv_weight": -0.5}, "tv_weight=-0.5: give a finite number >= 0"),
        ({"style_layers": {"relu1_1": -1.0, "relu2_1": 2.0}}, "style_layers['relu1_1']=-1.0: give a finite"),
        ({"style_layers": {"relu1_1": 0.0, "relu3_1": 0.0}}, "weights sum to 0"),
        ({"content_layers": {"relu4_2": 0.0}}, "weights sum to 0"),
        ({"steps": 0}, "whole number >= 1"),
        ({"steps": -5}, "whole number >= 1"),
        ({"steps": 2.5}, "whole number >= 1"),
        ({"style_layers": {"relu4_5": 1.0}}, "valid names are conv1_1, relu1_1"),
        ({"optimizer": "sgd"}, "choose one of lbfgs, adam"),
        ({"runtime": "tpu"}, "choose one of auto, cpu, cuda, mps"),
        ({"blend_weights": [1.0, 2.0, 3.0]}, "3 values but there are 2 style images"),
        ({"blend_weights": [1.0, -1.0]}, "blend_weights=-1.0: give a finite number >= 0"),
        ({"blend_weights": [0.0, 0.0]}, "at least one of them positive"),
        ({"init": "zeros"}, "choose one of content, noise, style"),
        ({"lr": 0.0}, "lr=0.0: give a finite number > 0"),
    ],
)
def test_bad_parameters_are_rejected_before_any_work(refuse_work, kwargs, match: str) -> None:
    refuse_work()
    with pytest.raises(ParameterError, match=re.escape(match)):
        stylize(CONTENT, [STYLE, STYLE], network="random", **{**RUN, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_rejected_before_any_work(refuse_work) -> None:
    refuse_work()
    with pytest.raises(ParameterError, match="CUDA is not available here; use device='cpu'"):
        stylize(CONTENT, STYLE, network="random", **{**RUN, "runtime": "cuda"})
