# ruff: noqa: RUF001 - Chinese punctuation is full-width on purpose.
"""Every word the offline engine says, one table per language: English, Chinese, Malay.

Each language has the same keys, so a new action is one more key in each table and
`offline.compose` stays one function. A key may have a variant per persona tone
("greeting@casual", used before "greeting"), and a phrase may be a tuple of alternatives:
the first one the bot has not said lately is used (Guard drops repetitions).
Placeholders: {name} (" Rachel" or ""), {bot}, {agent}, {label}, {link}, and in English
{kinds} (what the lead sent: "photo, video") and {wanted} (what they look for).
"""

from __future__ import annotations

Phrase = str | tuple[str, ...]
ENGLISH = "en"
_MORE_THANKS = ("Got it, thank you.", "Noted, thanks!", "Great, thanks for that.")

# Property types as listing cards and summaries name them (in English, as listings are written).
PROPERTY_NAMES = {
    "condo": "condo",
    "hdb": "HDB flat",
    "landed": "landed home",
    "executive_condo": "EC",
    "commercial": "commercial unit",
}
PHRASES: dict[str, dict[str, Phrase]] = {
    ENGLISH: {
        # The persona's tone decides how the bot introduces itself.
        "greeting@friendly": "Hi{name}! I'm {bot}, {agent}'s assistant. Thanks for reaching out.",
        "greeting@professional": "Good day{name}. I am {bot}, assistant to {agent}. Thank you "
        "for your enquiry.",
        "greeting@casual": "Hey{name}! {bot} here, helping {agent} out. Great to hear from you!",
        "intent": "Are you looking to buy a home to live in, to invest, or to rent?",
        "budget": "What budget range do you have in mind?",
        "area": "Which area or district would you prefer?",
        "property_type": "What type of property are you considering: condo, HDB, EC or landed?",
        "bedrooms": "How many bedrooms do you need?",
        "timeline": "When are you hoping to move or buy?",
        "thanks@friendly": ("Thanks, that's helpful!", *_MORE_THANKS),
        "thanks@professional": ("Thank you, that is helpful.", *_MORE_THANKS),
        "thanks@casual": ("Cool, thanks!", *_MORE_THANKS),
        "media": "Thanks for the {kinds}! I've kept it for {agent} to look at.",
        "media:image": "photo",
        "media:file": "document",
        "media:audio": "voice message",
        "media:video": "video",
        "media:sticker": "sticker",
        "offer": "{agent} can meet you at one of these times:",
        "offer_question": (
            "Which one suits you best?",
            "Which of these works for you?",
            "Would one of these suit you?",
        ),
        "taken": "Sorry, that time was just taken.",
        "still_free": "These are still free:",
        "taken_question": ("Would one of these work?", "Does one of these suit you instead?"),
        "booked": "You're booked with {agent} on {label}. You'll get a reminder the day before "
        "and an hour before.",
        "booked_any": "the time you chose",
        "calendar": "Add it to your calendar: {link}",
        "moved": "Done, your appointment with {agent} is moved to {label}.",
        "moved_any": "the new time",
        "moved_calendar": "The calendar entry is updated: {link}",
        "cancelled": "Your appointment with {agent} is cancelled. Just message here when you'd "
        "like to find another time.",
        "handoff": "Sure, I've let {agent} know. {agent} will reply to you here personally.",
        "pace": "No problem at all, take your time. There's no pressure from us: I'm here "
        "whenever you'd like information on a place or a price range.",
        "close": "You're welcome! {agent} and I are here whenever you need us.",
        "no_listing": "I don't have a {wanted} listed right now. I'll keep an eye out and let "
        "you know.",
        "listings": "Here's what matches:",
        "safe": "Thanks! {agent} will get back to you shortly.",
    },
    "zh": {
        "greeting": "您好{name}！我是{bot}，{agent}的助理。谢谢您的联系。",
        "intent": "请问您是想买房自住、投资，还是租房？",
        "budget": "您的预算大概是多少？",
        "area": "您比较喜欢哪个地区？",
        "property_type": "您考虑哪种房产：公寓、组屋、执行共管公寓还是有地住宅？",
        "bedrooms": "您需要几个房间？",
        "timeline": "您打算什么时候搬家或购买？",
        "thanks": "谢谢，这很有帮助！",
        "media": "谢谢您发来的文件！我已经保存好，{agent}会查看。",
        "offer": "{agent}可以在以下时间与您见面：",
        "offer_question": "哪个时间比较适合您？",
        "taken": "抱歉，那个时间刚被预约了。",
        "still_free": "这些时间还有空：",
        "taken_question": "这些时间可以吗？",
        "booked": "已为您预约{agent}，时间是{label}。我们会在前一天和前一小时提醒您。",
        "booked_any": "您选的时间",
        "calendar": "加入日历：{link}",
        "moved_calendar": "加入日历：{link}",
        "moved_any": "新的时间",
        "moved": "好的，您与{agent}的预约已改到{label}。",
        "cancelled": "您与{agent}的预约已取消。需要另约时间时，随时在这里留言。",
        "handoff": "好的，我已通知{agent}。{agent}会亲自在这里回复您。",
        "pace": "没问题，您慢慢来，我们不会催您。需要任何房源或价格信息时，随时找我。",
        "close": "不客气！{agent}和我随时为您服务。",
        "no_listing": "目前没有符合条件的房源。我会帮您留意，有消息会通知您。",
        "listings": "以下是符合条件的房源：",
        "safe": "谢谢您的信息！{agent}会尽快回复您。",
    },
    "ms": {
        "greeting": "Hai{name}! Saya {bot}, pembantu {agent}. Terima kasih kerana "
        "menghubungi kami.",
        "intent": "Adakah anda ingin membeli rumah untuk didiami, untuk pelaburan, atau menyewa?",
        "budget": "Berapakah bajet anda?",
        "area": "Kawasan atau daerah mana yang anda pilih?",
        "property_type": "Jenis hartanah apa yang anda pertimbangkan: kondo, HDB, EC atau "
        "rumah bertanah?",
        "bedrooms": "Berapa bilik tidur yang anda perlukan?",
        "timeline": "Bilakah anda bercadang untuk berpindah atau membeli?",
        "thanks": "Terima kasih, itu sangat membantu!",
        "media": "Terima kasih atas fail anda! Saya telah menyimpannya untuk {agent}.",
        "offer": "{agent} boleh berjumpa anda pada salah satu masa ini:",
        "offer_question": "Masa mana yang sesuai untuk anda?",
        "taken": "Maaf, masa itu baru sahaja ditempah.",
        "still_free": "Masa ini masih kosong:",
        "taken_question": "Adakah salah satu daripadanya sesuai?",
        "booked": "Temu janji anda dengan {agent} telah ditempah pada {label}. Anda akan "
        "menerima peringatan sehari dan sejam sebelumnya.",
        "booked_any": "masa yang anda pilih",
        "calendar": "Tambah ke kalendar anda: {link}",
        "moved_calendar": "Tambah ke kalendar anda: {link}",
        "moved_any": "masa baharu",
        "moved": "Baik, temu janji anda dengan {agent} telah dipindahkan ke {label}.",
        "cancelled": "Temu janji anda dengan {agent} telah dibatalkan. Hantar mesej di sini "
        "bila-bila masa untuk mencari masa lain.",
        "handoff": "Baik, saya telah memaklumkan {agent}. {agent} akan membalas anda sendiri "
        "di sini.",
        "pace": "Tiada masalah, ambil masa anda. Tiada tekanan daripada kami: saya sedia "
        "membantu bila-bila masa anda mahukan maklumat tentang hartanah atau harga.",
        "close": "Sama-sama! {agent} dan saya sentiasa sedia membantu.",
        "no_listing": "Buat masa ini tiada hartanah yang sepadan. Saya akan memaklumkan anda "
        "jika ada.",
        "listings": "Ini yang sepadan:",
        "safe": "Terima kasih atas mesej anda! {agent} akan membalas anda secepat mungkin.",
    },
}
