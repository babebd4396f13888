"""Recording rules: numbers, direction, tag, deterministic sampling, exclusions."""

from __future__ import annotations

import pytest

from control.errors import RulesError
from control.rules import load_rules, parse_rules, record_all, record_none, sample_bucket
from schemas.callevents import CallEvent


def event(call_id: str = "c1", **fields: str) -> CallEvent:
    return CallEvent(call_id=call_id, event_type="answered", **fields)  # type: ignore[arg-type]


def test_record_all_and_none() -> None:
    assert record_all().decide(event()).record
    decision = record_none().decide(event())
    assert (decision.record, decision.reason) == (False, "no_rule_matched")


def test_first_matching_rule_decides_with_its_channel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    path.write_text("""
[[rule]]
name = "vip-out"
from = ["+15550100"]
record = false

[[rule]]
name = "uk-support"
to = ["4420"]
direction = "inbound"
channel = "inbound"

[[rule]]
name = "sales"
tag = ["sales", "presales"]
""")
    rules = load_rules(path, "both")
    excluded = rules.decide(event(from_number="+15550100", to_number="+442000"))
    assert (excluded.record, excluded.reason) == (False, "excluded_by_rule: vip-out")
    support = rules.decide(event(from_number="+1", to_number="+442071234", direction="inbound"))
    assert (support.record, support.rule, support.channel) == (True, "uk-support", "inbound")
    outbound = rules.decide(event(to_number="+442071234", direction="outbound"))
    assert outbound.reason == "no_rule_matched"
    sales = rules.decide(event(tag="presales"))
    assert (sales.record, sales.rule, sales.channel) == (True, "sales", "both")
    assert not rules.decide(event()).record  # no numbers: prefix rules do not match


def test_sampling_is_a_stable_share_of_call_ids() -> None:
    rules = parse_rules({"rule": [{"name": "tenth", "sample_percent": 10}]})
    ids = [f"call-{n}" for n in range(4000)]
    chosen = [i for i in ids if rules.decide(event(i)).record]
    assert 300 < len(chosen) < 500
    assert chosen == [i for i in ids if rules.decide(event(i)).record]  # same every time
    assert all(sample_bucket(i) < 10 for i in chosen)


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "x", "direction": "sideways"},
        {"name": "x", "channel": "left"},
        {"name": "x", "sample_percent": 150},
        {"name": "x", "from": [1]},
        {"name": "x", "color": "red"},
        {"name": "x", "record": "yes"},
    ],
)
def test_bad_rules_name_the_rule(rule: dict[str, object]) -> None:
    with pytest.raises(RulesError, match="rule 'x'"):
        parse_rules({"rule": [rule]})
