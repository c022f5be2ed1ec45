"""The default ANTHROPIC_MODEL is a model the installed SDK knows and does not retire."""

from __future__ import annotations

from typing import get_args

from anthropic._data import DEPRECATED_MODELS  # the SDK's table of models and their end of life
from anthropic.types import Model

from shared.settings import Settings


def test_default_model_is_known_to_the_sdk_and_not_deprecated() -> None:
    default = Settings.model_fields["anthropic_model"].default
    named, _any_string = get_args(Model)

    assert default in get_args(named)
    assert default not in DEPRECATED_MODELS, DEPRECATED_MODELS.get(default)
