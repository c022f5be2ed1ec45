"""classify_consent: how leads ask to stop or resume contact is recognised; look-alikes are not."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.consent_phrases import classify_consent

OPT_OUT = [
    # English and Singlish, as leads write them
    "STOP",
    "stop.",
    "Stop!",
    "STOP messaging me",
    "unsubscribe",
    "pls unsubscribe me",
    "don't contact me",
    "do not message me again",
    "remove me",
    "remove me from your list",
    "take me off your list",
    "leave me alone",
    "not interested, stop sending",
    "no more messages",
    "opt out",
    "no need already",
    "no need liao",
    "don't need already, thanks",
    "dun msg me",
    "pls stop sending",
    "stop spamming me",
    "Please stop contacting me",
    "I told you to stop",
    "STOP STOP STOP",
    "stoppp",
    "stop la bro",
    "Stop!! I bought already",
    "ok can stop already",
    "Hi Sarah, stop",
    "Who is this? Stop",
    "not interested",
    "Sorry, I'm not interested",
    "no longer interested, thanks",
    "delete my number",
    "stop all these messages",
    "stop sending me listings",
    "dont want any more messages",
    "I don't want to receive messages anymore",
    "never contact me again",
    "dont contact me at all",
    "Hi, please remove me from your contact list. Thanks!",
    "Stop messaging me about the Tampines unit, I already bought one in Punggol",
    "how do I unsubscribe?",
    "no more spam pls",
    "dont whatsapp me",
    "stop msg me liao",
    "pls dun send me anymore",
    "Opt-out",
    "STOPALL",
    "Don\u2019t contact me",
    # Malay
    "berhenti",
    "jangan hubungi saya",
    "jangan mesej saya lagi",
    "tak nak terima mesej",
    "buang saya dari senarai",
    "Berhenti.",
    "tolong berhenti hantar mesej",
    "jangan ganggu saya",
    "jangan whatsapp saya lagi",
    "saya tak berminat",
    "dah tak perlu",
    "tak perlu lagi, terima kasih",
    "keluarkan nombor saya dari senarai",
    "x nak terima msg",
    "stop hantar mesej",
    "tak boleh message saya lagi",
    # Chinese, simplified and traditional; fullwidth punctuation is how Chinese is typed.
    "停止",
    "不要再发了",
    "别再联系我",
    "取消订阅",
    "退订",
    "不要再打扰我",
    "请停止发送信息",
    "别烦我",
    "我没兴趣，谢谢",  # noqa: RUF001
    "不需要了，谢谢",  # noqa: RUF001
    "把我从名单中删除",
    "请不要再发消息给我",
    "不要再打电话给我",
    "我要退订",
    "停！",  # noqa: RUF001
    "不要再發了",
    "別再聯繫我",
    "不可以再联系我",
    # Mixed
    "STOP 停止",
]

NEITHER = [
    # English and Singlish look-alikes
    "don't stop sending me listings",
    "please don't stop",
    "I'm not free Saturday",
    "no need to rush",
    "no need for a big unit",
    "stop by the showflat tomorrow?",
    "can you stop by at 3pm",
    "bus stop near the condo?",
    "is it near the MRT stop",
    "the unit is non-stop busy road?",
    "no need parking",
    "I need to stop renting and buy",
    "remove the old listing from my shortlist",
    "leave me the brochure",
    "I'm not interested in 2 bedrooms, prefer 3",
    "which stop should I alight at?",
    "the last stop on the line",
    "when does the shuttle stop running at night",
    "I want to stop looking at condos in the west",
    "stop sending me 2 bedroom listings, I want 3",
    "stop sending me condos in the west, only east",
    "don't message me before 10am pls",
    "don't call me, just WhatsApp",
    "don't text me the address, I have it",
    "don't message me here, use email",
    "Don't unsubscribe me",
    "no more units left?",
    "no need",
    "No need, thanks",
    "Can you send me the floor plan",
    "message me again tomorrow",
    "I am not interested in the Punggol unit",
    "opt for the bigger unit",
    "can stop at the showflat?",
    "Hi, I saw the 4-room at Tampines. Is it near the bus stop, and can I stop by on Sat?",
    "cancel",
    # Malay
    "jangan lupa hantar gambar",
    "jangan risau, saya datang",
    "bas berhenti dekat mana?",
    "jangan berhenti hantar listing",
    "saya nak berhenti sewa",
    "tak perlu parking",
    "tak nak unit tingkat bawah",
    "bila boleh mula?",
    # Chinese
    "不要太贵的",
    "停车场有吗",
    "不要停止发送",
    "可以退订金吗",
    "我想退订那个单位",
    "对两房没兴趣",
    "地铁站停止运营了吗",
    "不要发太多照片",
    "不需要了解",
    "停电了吗",
    "请明天再联系我",
    "什么时候开始交房",
    "取消",
    # Opt-in look-alikes
    "when does construction start?",
    "start date of the lease?",
    "I want to start renting next month",
]

OPT_IN = [
    "START",
    "start",
    "subscribe",
    "start again",
    "you can message me again",
    "Start again pls",
    "ok start",
    "resume",
    "resubscribe",
    "opt in",
    "Re-subscribe me please",
    "subscribe me again",
    "you can contact me again, I'm looking now",
    "please resume sending listings",
    "I want to receive updates again",
    # Malay
    "mula",
    "mula semula",
    "boleh hubungi saya semula",
    "langgan semula",
    # Chinese
    "开始",
    "重新订阅",
    "開始",
    "订阅",
    "请重新订阅",
    "恢复发送",
    "你可以再联系我了",
]

# Short commands a lead sends on their own, for the case/whitespace/emoji property below.
SHORT_OPT_OUT = [
    "stop",
    "unsubscribe",
    "opt out",
    "remove me",
    "leave me alone",
    "not interested",
    "no need already",
    "no need liao",
    "dun msg me",
    "don't contact me",
    "pls stop sending",
    "berhenti",
    "jangan hubungi saya",
    "停止",
    "退订",
    "取消订阅",
    "不要再打扰我",
]
# Words the patterns look for: text made of them reaches far more of the rules than noise.
VOCABULARY = [
    *["stop", "dont", "not", "no", "need", "me", "by", "bus", "unsubscribe", "remove", "leave"],
    *["already", "start", "again", "sending", "interested", "in", "to", "the", "you", "can"],
    *["berhenti", "jangan", "saya", "tak", "nak", "hantar", "mula", "lagi"],
    *["停", "止", "不要", "再", "发", "订阅", "退订", "开始", "了", "车"],
    *[",", ".", "!", "#", "\U0001f6d1"],
]
PADDING = st.text(alphabet=" \t\n\u00a0\u2003\u3000", max_size=4)
TRAILERS = st.lists(
    st.sampled_from(
        [".", "!", "?", "!!!", "...", "\u2026", "\u3002", "\uff01", "\uff1f", "\U0001f64f",
         "\U0001f621", "\U0001f6d1", "\u274c", "\U0001f645\u200d\u2642\ufe0f",
         "\U0001f44d\U0001f3fb"]
    ),
    max_size=3,
)  # fmt: skip


@st.composite
def decorated(draw: st.DrawFn, phrases: list[str]) -> str:
    """A phrase in random case, with surrounding whitespace and trailing punctuation or emoji."""
    phrase = draw(st.sampled_from(phrases))
    flips = draw(st.lists(st.booleans(), min_size=len(phrase), max_size=len(phrase)))
    cased = "".join(c.upper() if up else c.lower() for c, up in zip(phrase, flips, strict=True))
    return draw(PADDING) + cased + "".join(draw(TRAILERS)) + draw(PADDING)


@pytest.mark.parametrize("text", OPT_OUT)
def test_request_to_stop_is_opt_out(text: str) -> None:
    assert classify_consent(text) == "opt_out"


@pytest.mark.parametrize("text", NEITHER)
def test_look_alike_changes_nothing(text: str) -> None:
    assert classify_consent(text) is None


@pytest.mark.parametrize("text", OPT_IN)
def test_clear_request_to_resume_is_opt_in(text: str) -> None:
    assert classify_consent(text) == "opt_in"


def test_opt_out_wins_when_a_message_asks_both() -> None:
    assert classify_consent("STOP. Actually, start again") == "opt_out"


def test_fullwidth_and_curly_quotes_are_read_as_plain_text() -> None:
    assert classify_consent("\uff33\uff34\uff2f\uff30\uff01") == "opt_out"
    assert classify_consent("don\u2018t message me again \U0001f621") == "opt_out"


@given(decorated(SHORT_OPT_OUT))
@example("  StOp!!! \U0001f6d1 ")
@example("\u3000\u505c\u6b62\u3002")
def test_short_command_survives_case_whitespace_punctuation_and_emoji(text: str) -> None:
    assert classify_consent(text) == "opt_out"


@given(decorated(NEITHER))
def test_look_alike_stays_neutral_whatever_its_case_and_punctuation(text: str) -> None:
    assert classify_consent(text) is None


@given(st.sampled_from(SHORT_OPT_OUT), st.sampled_from(["Hi", "Hello Sarah", "Ok", "Sorry"]))
def test_greeting_clause_before_a_command_keeps_it(command: str, greeting: str) -> None:
    assert classify_consent(f"{greeting}, {command}") == "opt_out"


@given(
    st.one_of(
        st.text(),
        st.lists(st.sampled_from(VOCABULARY), max_size=12).map(" ".join),
    )
)
@example("")
@example("x" * 50_000)
def test_any_text_gives_one_of_the_three_answers(text: str) -> None:
    assert classify_consent(text) in (None, "opt_out", "opt_in")
