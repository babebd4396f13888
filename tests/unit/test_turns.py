"""Turn-taking (workers/analyzer/turns.py) on talk intervals whose answers are known."""

from __future__ import annotations

import pytest

from workers.analyzer.transcribe import Segment, Word
from workers.analyzer.turns import (
    TurnRules,
    dead_air,
    find_turns,
    nearest_rank,
    side_turns,
    turn_metric_rows,
    turn_rows,
)

RULES = TurnRules(merge_gap_ms=600, min_turn_ms=200, dead_air_ms=2000)
TRACKS = ("inbound", "outbound")
KEYS = {"call_id": "c", "part": 0, "recording_id": "c-0"}


def label(track: str) -> str:
    return {"inbound": "caller", "outbound": "agent"}[track]


def summary(
    caller: list[tuple[int, int]], agent: list[tuple[int, int]], rules: TurnRules = RULES
) -> list[tuple[str, int, int, int | None, bool, int | None]]:
    turns = find_turns({"inbound": caller, "outbound": agent}, TRACKS, rules)
    assert [t.index for t in turns] == list(range(len(turns)))
    return [
        (label(t.track), t.start_ms, t.end_ms, t.response_latency_ms, t.barge_in, t.yield_ms)
        for t in turns
    ]


def test_a_plain_dialogue_has_one_latency_per_answer() -> None:
    assert summary(caller=[(0, 1000), (2900, 4000)], agent=[(1200, 2000), (7000, 8000)]) == [
        ("caller", 0, 1000, None, False, None),  # nothing before it: no latency
        ("agent", 1200, 2000, 200, False, None),
        ("caller", 2900, 4000, 900, False, None),
        ("agent", 7000, 8000, 3000, False, None),
    ]


def test_a_barge_in_the_other_side_yields_to() -> None:
    # The agent talks from 0; the caller starts at 1500; the agent stops at 1800 (yield 300),
    # answers at 2700 after the caller's 2500.
    assert summary(caller=[(1500, 2500)], agent=[(0, 1800), (2700, 3500)]) == [
        ("agent", 0, 1800, None, False, None),
        ("caller", 1500, 2500, -300, True, 300),
        ("agent", 2700, 3500, 200, False, None),
    ]


def test_a_barge_in_the_other_side_talks_through() -> None:
    # The agent keeps talking to 5000: the caller's words are a barge-in with a 3.5 s yield,
    # and the agent's next turn follows its own, not the caller's (no latency).
    assert summary(caller=[(1500, 2500)], agent=[(0, 5000), (6000, 7000)]) == [
        ("agent", 0, 5000, None, False, None),
        ("caller", 1500, 2500, -3500, True, 3500),
        ("agent", 6000, 7000, None, False, None),
    ]


def test_own_pauses_join_unless_the_other_side_takes_the_floor() -> None:
    # A 400 ms pause with the other side silent: one turn. A 400 ms pause in which the caller
    # speaks a full turn: two turns (and the agent's second one answers the caller).
    assert summary(caller=[], agent=[(0, 1000), (1400, 2000)]) == [
        ("agent", 0, 2000, None, False, None)
    ]
    assert summary(caller=[(1050, 1350)], agent=[(0, 1000), (1400, 2000)]) == [
        ("agent", 0, 1000, None, False, None),
        ("caller", 1050, 1350, 50, False, None),
        ("agent", 1400, 2000, 50, False, None),
    ]
    # A pause as long as the merge gap ends the turn; a follow-on has no latency.
    assert summary(caller=[], agent=[(0, 1000), (1600, 2000)]) == [
        ("agent", 0, 1000, None, False, None),
        ("agent", 1600, 2000, None, False, None),
    ]


def test_short_sounds_are_no_turns_and_hold_no_floor() -> None:
    # A 100 ms click of the caller in the agent's pause neither is a turn nor splits it.
    assert summary(caller=[(1100, 1200)], agent=[(0, 1000), (1400, 2000)]) == [
        ("agent", 0, 2000, None, False, None)
    ]
    # Short bursts joined over short pauses make a turn: 150 + 150 ms with a 100 ms pause.
    assert side_turns([(0, 150), (250, 400)], [], RULES) == [(0, 400)]
    assert side_turns([(0, 150)], [], RULES) == []


def test_dead_air_is_the_long_silence_between_turns_only() -> None:
    turns = find_turns(
        {"inbound": [(3000, 4000), (9000, 9500)], "outbound": [(5000, 6900)]}, TRACKS, RULES
    )
    # 3000 of silence before the first turn is not dead air; 4000-5000 is too short.
    assert dead_air(turns, RULES) == [(6900, 9000)]
    assert dead_air(turns, TurnRules(dead_air_ms=2200)) == []


def test_nearest_rank_percentiles() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([300], 90) == 300
    assert nearest_rank([400, 100, 300, 200], 50) == 200
    values = list(range(1, 11))
    assert nearest_rank(values, 90) == 9 and nearest_rank(values, 100) == 10
    assert nearest_rank(values, 0) == 1


def test_rules_refuse_negative_lengths() -> None:
    with pytest.raises(ValueError, match="merge_gap_ms"):
        TurnRules(merge_gap_ms=-1)


def words(*items: tuple[int, int, str]) -> tuple[Word, ...]:
    return tuple(Word(s, e, t, 0.9) for s, e, t in items)


def test_rows_carry_the_words_that_fall_in_each_turn() -> None:
    talk = {"inbound": [(1500, 2500)], "outbound": [(0, 1800), (2700, 3500)]}
    turns = find_turns(talk, TRACKS, RULES)
    agent = [
        Segment(
            0,
            3400,
            "hello there sure thing",
            0.9,
            words(
                (-50, 400, " hello"),
                (500, 1700, " there"),
                (2600, 3000, " sure"),
                (3000, 3600, " thing"),
            ),
        )
    ]
    caller = [Segment(1500, 2500, "wait", 0.9)]  # no word times: the segment is one unit
    rows = turn_rows(KEYS, turns, {"inbound": caller, "outbound": agent}, label)
    assert [(r["turn"], r["speaker"], r["words"], r["text"], r["responds_to"]) for r in rows] == [
        (0, "agent", 2, "hello there", None),
        (1, "caller", 1, "wait", 0),
        (2, "agent", 2, "sure thing", 1),
    ]
    assert rows[1]["barge_in"] and rows[1]["yield_ms"] == 300 and rows[1]["duration_ms"] == 1000
    assert all(r["call_id"] == "c" for r in rows)


def test_metric_rows_per_side_and_for_the_call() -> None:
    # The caller barges in twice; the agent yields in 300 and 900 ms; latencies of the agent:
    # 200, 600, 1000 ms; dead air of 2500 ms once.
    caller = [(0, 1000), (2500, 3300), (5500, 6500), (11000, 11500)]
    agent = [(1200, 2800), (3900, 6400), (7500, 8500)]
    turns = find_turns({"inbound": caller, "outbound": agent}, TRACKS, RULES)
    rows = {r["track"]: r for r in turn_metric_rows(KEYS, TRACKS, turns, RULES, label)}
    assert [(t.track, t.response_latency_ms, t.barge_in) for t in turns] == [
        ("inbound", None, False),
        ("outbound", 200, False),
        ("inbound", -300, True),
        ("outbound", 600, False),
        ("inbound", -900, True),
        ("outbound", 1000, False),
        ("inbound", 2500, False),
    ]
    agent_row = rows["outbound"]
    assert (agent_row["speaker"], agent_row["turns"], agent_row["responses"]) == ("agent", 3, 3)
    assert (
        agent_row["response_latency_p50_ms"],
        agent_row["response_latency_p90_ms"],
        agent_row["response_latency_max_ms"],
    ) == (600, 1000, 1000)
    assert (
        agent_row["barge_ins"],
        agent_row["barged_into"],
        agent_row["yield_p50_ms"],
        agent_row["yield_max_ms"],
    ) == (0, 2, 300, 900)
    caller_row = rows["inbound"]
    assert (
        caller_row["barge_ins"],
        caller_row["barged_into"],
        caller_row["responses"],
        caller_row["response_latency_max_ms"],
        caller_row["first_turn_ms"],
    ) == (2, 0, 1, 2500, 0)
    assert agent_row["first_turn_ms"] == 1200 and agent_row["dead_air_count"] is None
    call = rows["call"]
    assert call["speaker"] is None and call["turns"] == 7 and call["barge_ins"] == 2
    assert (call["dead_air_count"], call["dead_air_ms"], call["dead_air_longest_ms"]) == (
        1,
        2500,
        2500,
    )
    assert call["response_latency_p50_ms"] == 600 and call["yield_p50_ms"] == 300


def test_a_call_without_speech_has_empty_figures() -> None:
    turns = find_turns({"inbound": [], "outbound": []}, TRACKS, RULES)
    assert turns == []
    rows = turn_metric_rows(KEYS, TRACKS, turns, RULES, label)
    assert [r["turns"] for r in rows] == [0, 0, 0]
    assert rows[-1]["dead_air_count"] == 0 and rows[-1]["response_latency_p50_ms"] is None
    assert turn_rows(KEYS, turns, {}, label) == []


def test_one_track_has_turns_and_no_latency() -> None:
    turns = find_turns({"inbound": [(0, 1000), (2000, 3000)]}, ("inbound",), RULES)
    assert [(t.start_ms, t.response_latency_ms, t.barge_in) for t in turns] == [
        (0, None, False),
        (2000, None, False),
    ]
