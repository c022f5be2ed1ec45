"""Identifiers as operators write them: business portfolio ids."""

from __future__ import annotations

import pytest

from shared.identity import InvalidPortfolioId, validate_portfolio_id


@pytest.mark.parametrize("value", ["104729384756", "Tan-Homes_SG", "7", "9" * 64])
def test_portfolio_ids_are_letters_digits_dash_underscore(value: str) -> None:
    assert validate_portfolio_id(f" {value} ") == value


@pytest.mark.parametrize("value", ["", " ", "1047 2938", "1047.29", "x" * 65, "bp/1", "ü"])
def test_other_portfolio_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidPortfolioId):
        validate_portfolio_id(value)
