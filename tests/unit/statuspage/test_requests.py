from __future__ import annotations

import pytest

from streams.statuspage.requests import AgentQuery, agent_query


def test_defaults_and_bounds_are_taken() -> None:
    assert agent_query({"agent": "support-bot"}) == AgentQuery("support-bot", None, 60, 20)
    asked = agent_query(
        {"agent": "bot v2 (eu)", "rollout_id": "cli-3f2a:1", "minutes": "1440", "limit": "200"}
    )
    assert asked == AgentQuery("bot v2 (eu)", "cli-3f2a:1", 1440, 200)
    assert agent_query({"agent": "a", "minutes": "1", "limit": "1"}).minutes == 1


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({}, "the agent parameter is required"),
        ({"agent": ""}, "agent must be 1 to 128 printable characters"),
        ({"agent": "   "}, "agent must be"),
        ({"agent": "x" * 129}, "agent must be"),
        ({"agent": "bot\n"}, "agent must be"),
        ({"agent": "bot\x1b[31m"}, "agent must be"),
        ({"agent": "a", "rollout_id": "x' OR '1'='1"}, "rollout_id must be"),
        ({"agent": "a", "rollout_id": "r" * 129}, "rollout_id must be"),
        ({"agent": "a", "minutes": "0"}, "minutes must be a whole number from 1 to 1440"),
        ({"agent": "a", "minutes": "1441"}, "minutes must be"),
        ({"agent": "a", "minutes": "nan"}, "minutes must be"),
        ({"agent": "a", "minutes": "-5"}, "minutes must be"),
        ({"agent": "a", "minutes": "1e3"}, "minutes must be"),
        ({"agent": "a", "minutes": "\u0661\u0662"}, "minutes must be"),  # Arabic-Indic digits
        ({"agent": "a", "minutes": "9" * 5000}, "minutes must be"),
        ({"agent": "a", "limit": "201"}, "limit must be a whole number from 1 to 200"),
        ({"agent": "a", "sort": "time"}, "unknown parameter 'sort'"),
    ],
)
def test_a_bad_parameter_is_named_in_one_line(parameters: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("(", r"\(")) as raised:
        agent_query(parameters)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 120
