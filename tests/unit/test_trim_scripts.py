"""Trimming beyond English punctuation, and lists of passages."""

from __future__ import annotations

import math

import pytest

from evalgate.trim import trim_context, trim_passages


def test_chinese_sentences_are_units_and_match_the_question() -> None:
    context = "东京是日本的首都。大阪是一个大城市。富士山是日本最高的山。京都有很多寺庙。"
    result = trim_context(context, "富士山有多高？", 0.3)
    assert result.text == "富士山是日本最高的山。"
    assert result.units_total == 4


def test_japanese_lines_match_by_character_pairs() -> None:
    context = "東京は日本の首都です\n大阪は大きな都市です\n富士山は高い山です\n京都には寺が多いです"
    assert trim_context(context, "富士山について", 0.3).text == "富士山は高い山です"


def test_devanagari_danda_ends_a_sentence() -> None:
    context = "भारत की राजधानी नई दिल्ली है। गंगा एक पवित्र नदी है। हिमालय बहुत ऊँचा है।"
    result = trim_context(context, "गंगा नदी", 0.4)
    assert result.text == "गंगा एक पवित्र नदी है।"


def test_unpunctuated_single_line_is_still_trimmed() -> None:
    words = [f"filler{i}" for i in range(300)]
    words[200:203] = ["the", "password", "is"]
    context = " ".join(words)
    result = trim_context(context, "what is the password", 0.3)
    assert result.tokens_after <= 0.3 * result.tokens_before
    assert "password" in result.text
    assert result.units_total > 1


def test_list_of_passages_keeps_its_shape() -> None:
    passages = [
        "Cats purr. The Eiffel Tower is in Paris.",
        "Dogs bark loudly. Rome has the Colosseum.",
        "Fish swim. Birds fly.",
    ]
    result = trim_passages(passages, "paris rome", 0.5)
    assert result.passages == ("The Eiffel Tower is in Paris.", "Rome has the Colosseum.")
    assert result.tokens_after <= 0.5 * result.tokens_before


def test_ratio_must_be_finite() -> None:
    with pytest.raises(ValueError):
        trim_context("a. b. c.", "a", math.nan)


def test_plan_trims_a_list_context_item_by_item(tmp_path, monkeypatch) -> None:
    from evalgate.plan import plan_items
    from evalgate.suite import load_suite

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        """\
suite: s
tiers: {t: openai/fake}
prompt: "{% for p in context %}[{{ p }}]{% endfor %} Q: {{ question }}"
configs:
  - {id: full, tier: t}
  - {id: half, tier: t, context_trim: 0.5}
cases:
  - id: c1
    vars:
      question: paris
      context: ["Cats purr. Paris is in France.", "Dogs bark. Fish swim."]
"""
    )
    items = {
        p.config.id: p.spec.messages[0]["content"]
        for p in plan_items(load_suite(tmp_path / "s.yaml"))
    }
    assert items["full"] == "[Cats purr. Paris is in France.][Dogs bark. Fish swim.] Q: paris"
    assert items["half"] == "[Paris is in France.] Q: paris"
