"""Reading a lead CSV: phone, business-scoped user ID or both; what makes a row a problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.repositories.lead_data import ImportRejected, ImportRow, parse_import_csv

HEADER = "name,phone,user_id,source,agent_id\n"


def test_a_user_id_column_is_read_besides_or_instead_of_phone() -> None:
    rows = parse_import_csv(
        HEADER
        + "Rachel,9888 7777,SG.1349120865530274,fair,agt_1\n"
        + "Ben,,SG.ENT.118034567890,fair,agt_1\n"
        + "Tom,+6591234567,,fair,\n"
    )
    assert rows == [
        ImportRow(2, "9888 7777", "SG.1349120865530274", "Rachel", "fair", agent_id="agt_1"),
        ImportRow(3, "", "SG.ENT.118034567890", "Ben", "fair", agent_id="agt_1"),
        ImportRow(4, "+6591234567", None, "Tom", "fair"),
    ]


def test_a_file_with_user_ids_and_no_phone_column_is_read() -> None:
    [row] = parse_import_csv("user_id,agent_id\nSG.1349120865530274,agt_1\n")
    assert (row.phone, row.user_id, row.problem) == ("", "SG.1349120865530274", None)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("Nobody,,,fair,agt_1", "phone or user_id: missing"),
        (
            "Rachel,SG.1349120865530274,,fair,agt_1",
            "phone: a business-scoped user ID belongs in the user_id column",
        ),
        ("Rachel,,6598887777,fair,agt_1", "user_id: not a business-scoped user ID"),
        ("Rachel,,sg.1349120865530274,fair,agt_1", "user_id: not a business-scoped user ID"),
        (
            "Rachel,,SG.1349120865530274,fair,",
            "user_id: needs the agent_id of an agent who knows the lead by it",
        ),
    ],
)
def test_a_row_without_a_usable_identifier_is_a_problem_row(line: str, problem: str) -> None:
    [row] = parse_import_csv(HEADER + line + "\n")
    assert row.problem is not None and row.problem.startswith(problem)


def test_a_header_without_phone_or_user_id_is_refused_whole() -> None:
    with pytest.raises(ImportRejected) as raised:
        parse_import_csv("name,source\nRachel,fair\n")
    assert "phone or user_id" in raised.value.errors["line 1"]


@given(st.text(max_size=300))
def test_any_text_is_rows_or_a_rejection(text: str) -> None:
    try:
        rows = parse_import_csv(HEADER + text)
    except ImportRejected:
        return
    for row in rows:
        assert row.problem is not None or row.phone or row.user_id
