"""Consent phrases: does a lead's message ask us to stop contacting them, or to start again?

Leads write English, Singlish, Malay and Chinese, in any case, with emoji and texting
abbreviations. Each clause of a message is judged on its own: an explicit request ("stop
messaging me", "jangan hubungi saya", "别再联系我") counts wherever it stands, while a bare
keyword ("stop", "berhenti", "停止") counts only when it is essentially the whole clause, so a
lead asking about the bus stop keeps getting answers. Guard patterns first blank out the
look-alikes ("stop by", "don't stop", "停车"). Opt-in is stricter than opt-out, and opt-out wins
a tie: resuming a lead who asked us to stop is the mistake that costs a complaint.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

ConsentIntent = Literal["opt_out", "opt_in"]
"""What a message asks about contact: stop (opt_out) or resume (opt_in)."""

# --- Normalization ----------------------------------------------------------------------------

_APOSTROPHES = re.compile(r"['`\u00b4\u2018\u2019\u02bc]")
# Requests usually sit in a clause of their own ("Not interested, stop sending"). Hyphens and
# slashes are no clause break: "non-stop" must stay one phrase. NFKC has already turned the
# fullwidth Chinese comma, exclamation and question marks into ASCII; the ideographic full stop
# and comma (U+3002, U+3001) and the ellipsis have no compatibility form.
_CLAUSE_BREAK = re.compile(r"[.,!?;:\n\u3001\u3002\u2026]+")
# People stretch words for emphasis ("stoppp", "pleaseee", "停停停").
_ELONGATION = re.compile(r"([^\W\d_])\1{2,}")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# Python counts CJK characters as word characters, so "stop停止" has no \b inside it.
_CJK_LATIN_BOUNDARY = re.compile(rf"(?<=[{_CJK}])(?=[^\W{_CJK}])|(?<=[^\W{_CJK}])(?=[{_CJK}])")
# Chinese is written without spaces; "不要 再发了" is the same request as "不要再发了".
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}]) +(?=[{_CJK}])")

# Texting spellings, one word each, mapped to the word the patterns below are written with.
_ABBREVIATIONS = {
    **dict.fromkeys(["pls", "plz", "plss", "plis", "pliz", "pleasee", "pleez"], "please"),
    **dict.fromkeys(["dun", "dnt", "donot"], "dont"),
    **dict.fromkeys(["msg", "mesg", "mssg", "msge", "mesej", "msj"], "message"),  # mesej: Malay
    **dict.fromkeys(["msgs", "mesejs"], "messages"),
    **dict.fromkeys(["txt"], "text"),
    **dict.fromkeys(["txts"], "texts"),
    **dict.fromkeys(["ws", "wa", "wasap", "whatsap", "watsapp", "wassap"], "whatsapp"),
    **dict.fromkeys(["u", "yu"], "you"),
    **dict.fromkeys(["ur"], "your"),
    # Singlish "liao" is "already".
    **dict.fromkeys(["alr", "alrdy", "ady", "oredi", "liao"], "already"),
    **dict.fromkeys(["nid"], "need"),
    **dict.fromkeys(["nv", "neva"], "never"),
    **dict.fromkeys(["wan"], "want"),
    **dict.fromkeys(["thx", "thks", "tks", "tq", "ty", "tqvm"], "thanks"),
    **dict.fromkeys(["unsub"], "unsubscribe"),
    **dict.fromkeys(["cannot"], "cant"),
    **dict.fromkeys(["stopall"], "stop all"),
    **dict.fromkeys(["optout"], "opt out"),
    **dict.fromkeys(["optin"], "opt in"),
    # Malay: tak/tidak (not), nak/mahu (want), saya (I).
    **dict.fromkeys(["tk", "tdk", "tidak"], "tak"),
    **dict.fromkeys(["taknak", "tknak", "taknk", "tknk", "xnak", "xnk"], "tak nak"),
    **dict.fromkeys(["nk", "mahu", "mau"], "nak"),
    **dict.fromkeys(["sy", "aku"], "saya"),
    **dict.fromkeys(["lg"], "lagi"),
    **dict.fromkeys(["dr", "drp", "daripada"], "dari"),
}
_PHRASES = (
    (re.compile(r"\bdo not\b"), "dont"),
    (re.compile(r"\bcan not\b"), "cant"),
    (re.compile(r"\bany more\b"), "anymore"),
    (re.compile(r"\b(?:thank you|terima kasih)\b"), "thanks"),
    (re.compile(r"\bre subscribe\b"), "resubscribe"),
    # Malay texting writes "tak" (not) as "x"; only before the verbs we look for, since a bare
    # "x" is also "times" or a kiss.
    (re.compile(r"\bx (?=nak|perlu|payah|berminat|boleh)\b"), "tak "),
)


def _clauses(text: str) -> list[str]:
    """The message as normalized clauses: casefolded, NFKC, without punctuation or emoji."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).casefold())
    return [c for c in (_normalize_clause(part) for part in _CLAUSE_BREAK.split(text)) if c]


def _normalize_clause(clause: str) -> str:
    kept = []
    for char in clause:
        category = unicodedata.category(char)
        if category[0] in "LN":
            kept.append(char)
        elif category[0] != "M" and category != "Cf":
            # Marks and format characters (variation selectors, zero-width joiners) are parts
            # of emoji; dropping them rather than spacing them keeps words whole.
            kept.append(" ")
    clause = _ELONGATION.sub(r"\1", "".join(kept))
    clause = _CJK_LATIN_BOUNDARY.sub(" ", clause)
    clause = " ".join(_ABBREVIATIONS.get(word, word) for word in clause.split())
    for phrase, replacement in _PHRASES:
        clause = phrase.sub(replacement, clause)
    return _SPACE_BETWEEN_CJK.sub("", clause)


# --- Vocabulary -------------------------------------------------------------------------------


def _any(alternatives: str) -> str:
    """A regex group matching any of the '|'-separated alternatives."""
    return f"(?:{alternatives})"


_CONTACT_VERB = _any(
    "contact|message|text|whatsapp|sms|email|spam|disturb|bother|bug|pester|harass|chase|ping"
)
# "Don't send me / call me / update me" often goes on with what to send or when to call
# instead, so these count only with "again" or "anymore".
_SOFT_CONTACT_VERB = _any("send|call|update|follow up")
_CONTACTING = _any(
    "contacting|messaging|texting|whatsapping|emailing|spamming|disturbing|bothering|bugging"
    "|pestering|harassing|chasing|pinging|blasting|sending|calling|updating|following up"
)
_MESSAGES = _any(
    "messages?|texts?|spam|calls?|whatsapps?|updates?|promos?|promotions?|ads|marketing|broadcasts?"
)
_LISTINGS = _any("listings?|units?|condos?|hdbs?|flats?|properties|launches")
_DETERMINERS = _any("all|the|these|those|this|your|such|any|more|anymore")
# "Don't text me the address", "don't message me here, email": what or where, not whether.
_OBJECT_OR_CHANNEL_FOLLOWS = (
    r"(?! (?:the|a|an|that|those|these|my|about|on|via|through|here|there|in|at(?! all))\b)"
)
_MS_CONTACT = _any(
    "hubungi|menghubungi|message|whatsapp|sms|call|telefon|kacau|ganggu|spam|contact|text"
)
_ZH_DONT = _any("不要|别|別|勿|请勿|請勿|不用|不必|不需要|不可以|不能|不准|不许|不許")
_ZH_CONTACT = _any("联系|聯繫|联络|聯絡|打扰|打擾|骚扰|騷擾|烦|煩|打电话给|打電話給")
_ZH_SEND = _any("发|發|传|傳")
_ZH_MESSAGES = _any("信息|消息|讯息|訊息|短信|简讯|簡訊|了|啦")
_ZH_SUBSCRIPTION = _any("订阅|訂閱")

# Words that do not change what a short clause asks: politeness, Singlish particles, fillers.
_FILLER_WORDS = frozenset(
    # Politeness and greetings, English and Malay
    {"please", "thanks", "sorry", "hi", "hello", "hey", "dear", "ok", "okay", "yes", "yeah"}
    | {"oh", "sir", "madam", "bro", "sis", "boss", "tolong", "sila"}
    # Particles, Singlish and Malay
    | {"lah", "la", "leh", "lor", "ah", "ar", "meh", "sia", "hor", "je", "ye", "ya"}
    # Emphasis, time and the people talking: "can you just stop it already"
    | {"just", "now", "already", "anymore", "really", "seriously", "all", "it", "this"}
    | {"i", "im", "am", "can", "you", "could", "and", "but", "so", "then"}
)
_CJK_FILLERS = re.compile(
    "麻烦你|麻煩你|麻烦|麻煩|谢谢|謝謝|多谢|多謝|帮我|幫我|我要|我想|现在|現在|已经|已經|可以|好的"
    "|请|請|你|我|好|吧|啦|啊|呀|哦|喔|嗯"
)


def _compile(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


# --- Guards: look-alikes of a request, blanked out before anything is matched -----------------

_NOT_A_REQUEST = _compile(
    # "please don't stop", "don't stop sending me listings": a negated request asks the opposite.
    r"\b(?:dont|never|not|cant|wont|didnt|doesnt)"
    r" (?:stop|unsubscribe|opt out|opt in|remove me|resubscribe|subscribe|start)\b",
    # "bus stop", "the MRT stop", "which stop", "non-stop", "one-stop": stop as a noun.
    r"\b(?:a|the|which|what|that|next|last|first|nearest|closest|one|two|three|few|\d+|bus|mrt"
    r"|lrt|train|tram|taxi|shuttle|non) stops?\b",
    # "stop by the showflat", "can stop at 3pm": stop as a visit.
    r"\bstop (?:by|over|off|in|at(?! once))\b",
    # "I need to stop renting": stopping something other than our messages.
    rf"\bstop (?!{_CONTACTING}\b)[^\W\d_]+ing\b",
    # "not interested in 2 bedrooms": narrowing the search, not ending it.
    r"\b(?:not|no longer) interested in \w+",
    # "stop sending me 2-bedroom listings", "stop sending me condos in the west": same.
    rf"\bstop sending (?:me )?(?:(?!me\b|{_DETERMINERS}\b)\w+ ){{1,3}}{_LISTINGS}\b",
    rf"\bstop sending (?:me )?{_LISTINGS} (?:in|at|near|around|with|above|below|under|over"
    r"|outside|like|that)\b",
    # "don't message me before 10am", "stop texting me so late": when, not whether.
    rf"\b(?:dont|never) (?:{_CONTACT_VERB}|{_SOFT_CONTACT_VERB}) me (?:before|after|until|till"
    r"|during|on|at(?! all)|in the|between|so early|so late|late|early|tonight|today|tomorrow"
    r"|now)\b",
    rf"\bstop {_CONTACTING} me (?:so late|so early|late|early|at night|before|after|during)\b",
    # Malay: "jangan berhenti" (don't stop), "bas berhenti" (the bus stops).
    r"\bjangan berhenti\b",
    r"\b(?:bas|bus|kereta|mrt|lrt|teksi|tren|van|lif|lift) berhenti\b",
    # Chinese: negated stop/cancel ("不要停止发送" is "don't stop sending").
    rf"{_ZH_DONT}(?:停|取消|退订|退訂)",
    # 停 in other words: parking, power or water cut, works halted, a bus calling at a stop.
    r"停(?:车|車|电|電|水|工|靠|放|留)",
    # 退订金: refund of a booking deposit, not an unsubscribe.
    r"退(?:订金|訂金|定金)",
    # 了解 (understand): "不需要了解" is "no need to understand", not "no need anymore".
    r"(?:不用|不需要)了(?:解|不起)",
)
# Normalized text has no punctuation left, so "#" matches nothing; it still counts as a word,
# so a clause with a look-alike in it is never "essentially just the keyword".
_MASK = " # "

# --- Opt-out ----------------------------------------------------------------------------------

# Requests explicit enough to count anywhere in a clause, however long.
_OPT_OUT_REQUESTS = _compile(
    # English and Singlish
    r"\bunsubscribe\b",
    r"\bopt (?:me )?out\b",
    rf"\bstop (?:{_CONTACTING}|{_CONTACT_VERB}|{_SOFT_CONTACT_VERB})\b",  # "stop msg me"
    rf"\bstop (?:{_DETERMINERS} )+{_MESSAGES}\b",
    rf"\b(?:dont|never) (?:ever )?{_CONTACT_VERB} me\b{_OBJECT_OR_CHANNEL_FOLLOWS}",
    rf"\b(?:dont|never) (?:ever )?(?:{_CONTACT_VERB}|{_SOFT_CONTACT_VERB})(?: me)?"
    r" (?:again|anymore)\b",
    rf"\bno more {_MESSAGES}\b",
    rf"\bdont want (?:to (?:receive|get) )?(?:{_DETERMINERS} )*{_MESSAGES}\b",
    r"\b(?:remove|delete|take|drop) me (?:off|from|out of)\b",
    r"\b(?:remove|delete|erase) my (?:number|contact|details|data)\b",
    r"\bleave me alone\b",
    r"\b(?:no|dont) need (?:already|anymore)\b",  # "no need liao"
    rf"\b(?:told|asked) you (?:to stop|not to (?:{_CONTACT_VERB}|{_SOFT_CONTACT_VERB}) me)\b",
    # Malay
    rf"\b(?:jangan|tak boleh) (?:lagi )?{_MS_CONTACT} (?:saya|kami)\b",
    r"\bjangan (?:hantar|menghantar|kirim) (?:lagi|message|messages|apa apa)\b",
    r"\b(?:berhenti|henti|stop) (?:hantar|menghantar|message|hubungi|menghubungi|kacau|ganggu"
    r"|whatsapp|langganan|melanggan)\b",
    r"\btak nak (?:terima|dapat|menerima|mendapat) (?:apa apa |sebarang )?"
    r"(?:lagi|message|messages|sms|whatsapp|iklan|promosi|maklumat)\b",
    r"\b(?:buang|keluarkan|padam|remove|delete) (?:saya|nombor saya|no saya)"
    r" (?:dari|from) (?:senarai|list|group|kumpulan)\b",
    r"\b(?:tak|dah tak) (?:perlu|payah|berminat) (?:lagi|dah)\b",
    r"\bdah tak (?:perlu|payah|nak|berminat)\b",
    # Chinese
    rf"{_ZH_DONT}再?{_ZH_CONTACT}我",
    rf"{_ZH_DONT}再?(?:给我|給我)?{_ZH_SEND}(?:给我|給我)?{_ZH_MESSAGES}",
    r"停止(?:发送|發送|发|發|推送|联系|聯繫|打扰|打擾|信息|消息|通知)",
    rf"(?:取消|退出|停止){_ZH_SUBSCRIPTION}",
    r"(?:把我|将我|將我)(?:从|從).{0,10}(?:删除|刪除|删掉|刪掉|移除|去掉)",
    r"(?:删除|刪除|删掉|刪掉)我的(?:号码|號碼|电话|電話|联系方式|聯繫方式)",
)
# Keywords that ask to stop only when they are essentially the whole clause: "stop" in
# "stop la bro" is a request, in "when does the shuttle stop running at night" it is not.
_OPT_OUT_KEYWORDS = _compile(
    r"\bstop\b",
    r"\bremove me\b",
    r"\b(?:not|no longer) interested\b",
    r"\b(?:berhenti|henti|nyahlanggan)\b",
    r"\btak berminat\b",
    # 退订 is also cancelling a unit booking ("我想退订那个单位"), so it too must stand alone.
    r"停止|停|退订|退訂|不需要了|不用了|没兴趣|沒興趣|没有兴趣|不感兴趣|不感興趣",
)
# "stop la bro I bought already" still leaves one word ("bought") besides the keyword.
_OPT_OUT_EXTRA_WORDS = 1

# --- Opt-in -----------------------------------------------------------------------------------

_OPT_IN_REQUESTS = _compile(
    # English
    r"\bresubscribe\b",
    r"\bopt (?:me )?(?:back )?in\b",
    rf"\byou (?:can|may) (?:now )?(?:{_CONTACT_VERB}|{_SOFT_CONTACT_VERB}) me (?:again|back)\b",
    r"\b(?:resume|restart) (?:sending|messaging|texting|contacting|updating|whatsapping)\b",
    r"\bstart (?:sending|messaging|texting|contacting|updating|whatsapping) (?:me )?again\b",
    rf"\b(?:want|like) to (?:receive|get) (?:your |the )?(?:{_MESSAGES}|{_LISTINGS}) again\b",
    r"\bi (?:want|would like|wish) to (?:re)?subscribe\b",
    # Malay
    rf"\b(?:boleh|sila) {_MS_CONTACT} saya (?:lagi|semula|balik)\b",
    r"\b(?:langgan|melanggan) semula\b",
    r"\b(?:mula|sambung) (?:hantar|message) (?:semula|balik|lagi)\b",
    # Chinese
    rf"重新{_ZH_SUBSCRIPTION}",
    rf"(?:恢复|恢復)(?:{_ZH_SUBSCRIPTION}|发送|發送|推送|联系|聯繫)",
    # "你可以再联系我了" (you can contact me again), not "请明天再联系我" (call me again tomorrow).
    r"(?:可以|能)(?:重新|再)(?:联系|聯繫)我|重新(?:联系|聯繫)我",
)
_OPT_IN_KEYWORDS = _compile(
    r"\b(?:start(?: again| over)?|restart|resume|unstop)\b",
    r"\bsubscribe(?: me)?(?: again| back)?\b",
    r"\b(?:mula(?: semula)?|mulakan|langgan|melanggan)\b",
    r"开始|開始|订阅|訂閱|恢复|恢復",
)
# Resuming without a clear request is the costly mistake, so opt-in keywords must stand alone:
# "start" is a request, "when does the lease start" is not.
_OPT_IN_EXTRA_WORDS = 0


# --- Classification ---------------------------------------------------------------------------


def classify_consent(text: str) -> ConsentIntent | None:
    """Whether a lead's message asks to stop being contacted, clearly asks to resume, or neither."""
    found = {_classify_clause(clause) for clause in _clauses(text)}
    # "Stop. Actually, start again" stays an opt-out: keeping an opt-out costs the lead one
    # more "START"; dropping one wrongly means messaging someone who asked us not to.
    if "opt_out" in found:
        return "opt_out"
    if "opt_in" in found:
        return "opt_in"
    return None


def _classify_clause(clause: str) -> ConsentIntent | None:
    clause = _NOT_A_REQUEST.sub(_MASK, clause)
    if _OPT_OUT_REQUESTS.search(clause) or _is_short_command(
        clause, _OPT_OUT_KEYWORDS, _OPT_OUT_EXTRA_WORDS
    ):
        return "opt_out"
    if _OPT_IN_REQUESTS.search(clause) or _is_short_command(
        clause, _OPT_IN_KEYWORDS, _OPT_IN_EXTRA_WORDS
    ):
        return "opt_in"
    return None


def _is_short_command(clause: str, keywords: re.Pattern[str], max_extra_words: int) -> bool:
    if not keywords.search(clause):
        return False
    return _content_words(keywords.sub(" ", clause)) <= max_extra_words


def _content_words(text: str) -> int:
    # A Chinese character counts as a word: one-character remainders ("停车" without 停) are
    # exactly the look-alikes, and the fillers (请, 谢谢, 我要) are removed first.
    count = 0
    for word in text.split():
        if _CJK_CHAR.match(word):
            count += len(_CJK_FILLERS.sub("", word))
        elif word not in _FILLER_WORDS:
            count += 1
    return count
