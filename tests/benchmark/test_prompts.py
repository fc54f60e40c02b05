"""prompts.jsonl, ShareGPT and random prompts: what loads, and how bad input is reported."""

from __future__ import annotations

import json

import pytest

from batuta.backends.types import Message
from batuta.benchmark.prompts import (
    BenchPrompt,
    PromptFileError,
    load_jsonl,
    load_sharegpt,
    random_prompts,
    take,
)


def _write(tmp_path, lines, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_prompts_and_messages(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"prompt": "Why is the sky blue?", "max_tokens": 32, "system": "Be brief."}),
            "",
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You are terse."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."},
                        {"role": "user", "content": "Count to 3"},
                    ]
                }
            ),
            "   ",
            json.dumps({"messages": [{"role": "user", "content": "Only me"}], "system": "S"}),
        ],
    )
    first, second, third = load_jsonl(path)
    assert first == BenchPrompt("Why is the sky blue?", "Be brief.", (), 32, f"{path}:1")
    assert second.prompt == "Count to 3"
    assert second.system == "You are terse."
    assert second.history == (Message("user", "Hi"), Message("assistant", "Hello."))
    assert second.source == f"{path}:3"
    assert (third.prompt, third.system, third.history) == ("Only me", "S", ())


def test_a_prompts_own_max_tokens_wins():
    own = BenchPrompt("a", max_tokens=5).request(64, model="m", temperature=0.0)
    default = BenchPrompt("a", system="s").request(64)
    assert (own.max_tokens, own.model, own.temperature, own.stream) == (5, "m", 0.0, True)
    assert (default.max_tokens, default.system) == (64, "s")
    assert [m.role for m in default.messages()] == ["system", "user"]


def test_every_bad_line_is_reported_with_its_line_and_field(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"prompt": "fine"}),
            '{"prompt": "unterminated',
            json.dumps({"max_tokens": 8}),
            json.dumps({"prompt": 42}),
            json.dumps({"prompt": "x", "max_tokens": "ten"}),
            json.dumps({"prompt": "x", "max_tokens": 0}),
            json.dumps({"prompt": "x", "max_tokens": True}),
            json.dumps({"prompt": "x", "system": ["no"]}),
            json.dumps({"prompt": "x", "temperature": 0.2}),
            json.dumps(["not", "an", "object"]),
            json.dumps({"prompt": "x", "messages": []}),
        ],
    )
    with pytest.raises(PromptFileError) as info:
        load_jsonl(path)
    found = [(i.line, i.path) for i in info.value.issues]
    assert found == [
        (2, ""),
        (3, "prompt"),
        (4, "prompt"),
        (5, "max_tokens"),
        (6, "max_tokens"),
        (7, "max_tokens"),
        (8, "system"),
        (9, "temperature"),
        (10, ""),
        (11, "prompt"),
    ]
    text = str(info.value)
    assert f"{path}:2:" in text and "invalid JSON" in text
    assert f"{path}:3:1: prompt: missing (give prompt or messages)" in text
    assert f"{path}:4:2: prompt: must be a non-empty string" in text  # column of the key
    assert "temperature: unknown field" in text
    assert f"{path}:10:1: each line must be a JSON object" in text


@pytest.mark.parametrize(
    ("messages", "field", "message"),
    [
        ([], "messages", "non-empty list"),
        (["hi"], "messages[0]", "object with role and content"),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "must be one of"),
        ([{"role": "user", "content": 3}], "messages[0].content", "must be a string"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
         "messages", "last message must be from user"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
          {"role": "user", "content": "c"}], "messages", "system message may only come first"),
    ],
)  # fmt: skip
def test_bad_messages(tmp_path, messages, field, message):
    path = _write(tmp_path, [json.dumps({"messages": messages})])
    with pytest.raises(PromptFileError) as info:
        load_jsonl(path)
    (issue,) = info.value.issues
    assert (issue.line, issue.path) == (1, field)
    assert message in issue.message


def test_system_given_twice_is_refused(tmp_path):
    line = {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}
    path = _write(tmp_path, [json.dumps({**line, "system": "c"})])
    with pytest.raises(PromptFileError, match="system: also given as a system message"):
        load_jsonl(path)


def test_many_bad_lines_are_capped_in_the_message(tmp_path):
    path = _write(tmp_path, ["{"] * 25)
    with pytest.raises(PromptFileError) as info:
        load_jsonl(path)
    assert len(info.value.issues) == 20
    assert str(info.value).endswith("... and 5 more")


def test_empty_and_unreadable_files(tmp_path):
    with pytest.raises(PromptFileError, match="no prompts in the file"):
        load_jsonl(_write(tmp_path, ["", "  "]))
    with pytest.raises(PromptFileError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(PromptFileError, match="cannot read"):
        load_jsonl(bad)


def _sharegpt(tmp_path, data):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_sharegpt_keeps_human_first_conversations(tmp_path):
    turn = {"from": "gpt", "value": "answer"}
    data = [
        {"id": "a", "conversations": [{"from": "human", "value": "Q1"}, turn]},
        {"id": "b", "conversations": [{"from": "human", "value": "Q2"}]},  # one turn: skipped
        {"id": "c", "conversations": [{"from": "gpt", "value": "Hi"}, turn]},  # gpt first
        {"id": "d", "conversations": [{"from": "human", "value": ""}, turn]},  # empty
        {"id": "e"},
        "junk",
        {"id": "f", "conversations": [{"from": "user", "value": "Q3"}, turn]},
        {"id": "g", "conversations": [{"from": "human", "value": "Q4"}, turn]},
    ]
    path = _sharegpt(tmp_path, data)
    first = load_sharegpt(path, seed=0)
    assert sorted(p.prompt for p in first) == ["Q1", "Q3", "Q4"]
    assert load_sharegpt(path, seed=0) == first
    orders = {tuple(p.prompt for p in load_sharegpt(path, seed=s)) for s in range(10)}
    assert len(orders) > 1  # the seed shuffles


def test_sharegpt_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"conversations": [}\n]', encoding="utf-8")
    with pytest.raises(PromptFileError, match=rf"{bad}:2:\d+: invalid JSON"):
        load_sharegpt(bad)
    with pytest.raises(PromptFileError, match="a ShareGPT file is a JSON list"):
        load_sharegpt(_sharegpt(tmp_path, {"conversations": []}))
    with pytest.raises(PromptFileError, match="no entry with a human first turn"):
        load_sharegpt(_sharegpt(tmp_path, [{"conversations": []}]))
    with pytest.raises(PromptFileError, match="cannot read"):
        load_sharegpt(tmp_path / "absent.json")


def test_random_prompts_are_seeded_and_sized():
    a = random_prompts(3, 50, seed=1)
    assert [len(p.prompt.split()) for p in a] == [50, 50, 50]
    assert random_prompts(3, 50, seed=1) == a
    assert random_prompts(3, 50, seed=2) != a
    assert len({p.prompt for p in a}) == 3
    assert a[0].estimated_tokens() == -(-len(a[0].prompt) // 4)


def test_take_cycles_and_truncates():
    prompts = [BenchPrompt("a"), BenchPrompt("b")]
    assert [p.prompt for p in take(prompts, 5)] == ["a", "b", "a", "b", "a"]
    assert [p.prompt for p in take(prompts, 1)] == ["a"]
    assert take(prompts, None) == prompts


def test_estimated_tokens_count_every_part():
    prompt = BenchPrompt("abcd", system="efgh", history=(Message("user", "ijkl"),))
    assert prompt.estimated_tokens() == 3
    assert BenchPrompt("").estimated_tokens() == 1
