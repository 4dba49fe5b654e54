"""Moderation clauses of a message: where it splits, each clause's operation (block / unblock) and target."""

from __future__ import annotations

import re

from pydantic import BaseModel

from .catalog import fold
from .lexicon import GENRE_SYNONYMS, TIME_PHRASE

_MOD_TOPIC = re.compile(
    r"\b(?:spam\w*|scams?|crypto\w*|ads|adverts?|advertising|messages?|comments?|posts?|replies|dms?|insults?"
    r"|toxic\w*|harass\w*|slurs?|hate speech|profanity|swearing|curse words|rude\w*|offensive|nsfw|trolls?"
    r"|bots?|phishing|self-promotion|promo\w*|political rants?|negativity|negative (?:comments|posts|messages)"
    r"|scammers?"
    r"|(?:un)?(?:block|mute)\s+(?:all\s+|any\s+|the\s+)?negative)\b"  # the base category by its name alone
)
_UNBLOCK = re.compile(r"\b(?:unblock|unmute|allow|stop (?:blocking|hiding|filtering)|let .+ through|is fine"
                      r"|are fine|(?:is|are) (?:ok|okay|alright|allowed)|(?:i'm|im|i am) (?:fine|ok|okay) with"
                      r"|(?:show|see) .+ again|(?:don't|dont|do not) mind)\b")
_MOD_VERBS = re.compile(
    r"^(?:(?:please|pls|plz|hey|yo|ok|okay|also|and|so|now|oh|just|ugh|lol)\W+)*(?:stop showing me|stop sending me"
    r"|don't show me|do not show me|"
    r"i don't want to see|i do not want to see|no more|no|zero|block|hide|filter out|mute|remove|unblock|unmute|allow|"
    r"stop blocking|stop hiding|stop filtering|i hate|get rid of)\s+(?:any\s+|all\s+|the\s+)?"
)
# the separators are kept (a capturing group): see split_moderation
_SPLIT = re.compile(r"([;!?]|\.(?=\s|$)|,\s*(?:and\s+)?|\s(?:and|but|also|plus)\s)")
_REC_CUE = re.compile(r"\b(?:movies?|films?|feed|recommend\w*|watch\w*|show me|cinema|genre|series)\b")


class ModerationAction(BaseModel):
    op: str  # "block" | "unblock"
    target: str
    result: str = ""
    #: The command named a period ("block spam for two days"); moderation settings have none, so the reply says
    #: the change lasts until it is undone instead of implying it will end.
    stated_period: bool = False


#: Words that make a piece more than a bare target: an operation ("keep hiding spam", "spam should stay blocked")
#: or feed framing ("more comedies").
_OPERATION_WORDS = re.compile(
    r"\b(?:keep\w*|hid\w*|block\w*|unblock\w*|still|continu\w*|stay\w*|hate|want|show\w*|see|allow\w*|mut\w*"
    r"|unmut\w*|filter\w*|remov\w*|stop\w*|let|fine|ok|okay|mind|like|love|should|must|never|no|not|nothing|more"
    r"|less|fewer|only|just|again|anymore|don't|dont|do not)\b")
#: Politeness and emphasis after a target, dropped from it ("block spam and drugs please": "drugs"). Time words are
#: `moderation_action`'s ("gambling for now": "gambling").
# Possessive (*+): the spaces between two filler words went to either side, so a miss at the end tried 2**n splits
# ("block spam " + "please " * 20 + "x": 7.5 s; review of session 35). Giving them back can never make a match.
_TRAILING_FILLER = re.compile(r"(?:\s*+\b(?:please|pls|plz|too|as well|also|asap|thanks?|thank you|thx|for real"
                              r"|forever|permanently|already)\b\W*+)+$", re.I)
_POLITE_TAIL = re.compile(r"(?:\s*+\b(?:please|pls|plz|too|as well|thanks?|thank you|thx)\b\W*+)+$", re.I)
_LEADING_FILLER = re.compile(r"^(?:\s*+\b(?:and|also|plus|please|oh|maybe)\b\W*+)+", re.I)
#: Pieces that are no target: closing words, emphasis, interjections, adverbs, who is spoken to ("stop blocking
#: insults, you idiot", "block spam, seriously").
_NOT_A_TARGET = re.compile(
    r"^(?:thanks?|thank you|thx|ty|so on|etc\.?|etcetera|stuff|things|the rest|too|as well|everything else"
    r"|that'?s it|that is all|yes|yeah|yep|no|nope|ok|okay|cool|great|nice|whatever|cheers|ugh|omg|lol|haha|damn"
    r"|right|for real|asap|now|right now|forever|everywhere|anywhere|again|idiot|stupid|dummy|seriously|honestly"
    r"|really|totally|literally|absolutely|definitely|finally|obviously|actually|basically|clearly|frankly"
    r"|hopefully|immediately|completely|entirely|permanently|certainly|surely|truly|simply|genuinely|personally"
    r"|quickly|already|anyway|anyways|please)\W*$"
    r"|^(?:you|u|ya|i|i'm|im|me|my|we|us|our|he|she|they|them|it|it's|its|this|that|your"
    r"|lol|haha|man|dude|bro|mate|guys|folks|sir|ma'am|buddy|pal|friend)\b")
_GENRE_WORDS = "|".join(sorted({re.escape(fold(f)) for forms in GENRE_SYNONYMS.values() for f in forms},
                               key=len, reverse=True))
#: A piece naming one genre ("horror", "horror flicks", "comedies for a week"): the feed's, not a moderation category.
_FEED_VALUE = re.compile(r"^(?:the\s+)?(?P<value>" + _GENRE_WORDS + r")(?:\s+(?:movies?|films?|flicks?|shows?|ones"
                         r"|stuff|titles))?(?P<period>\s+(?:for|until|till|this|today|tonight|over|during|in|within)"
                         r"\b.*)?$")
#: Years and decades after a moderation clause ("block spam and the 90s"): neither a category nor, from there, a feed
#: rule (excluding a decade is refused by the parser; sent as it is it read "only the 90s").
_YEARS = re.compile(r"^(?:the\s+)?(?:(?:19|20)?\d0s|(?:19|20)\d\d)(?:\s+(?:movies?|films?|ones|stuff))?$")
#: A moderation clause about content ("posts about religion"): what follows it is more content ("and war").
_ABOUT = re.compile(r"\b(?:about|regarding|mentioning|concerning|related to|involving|on the topic of)\b")


def split_moderation(text: str) -> tuple[list[str], str]:
    """(moderation clauses, remaining text for the recommendation parser). A bare target joined by "and" or a comma
    to a moderation clause is a moderation clause of its own ("block posts about weapons and drugs": "drugs" used to
    fall to the feed parser and vanish; `moderation_actions` gives it the operation before it); interjections,
    adverbs and closing words are none ("block spam, seriously"). A genre there goes to the feed with that
    operation ("block spam and horror" excludes horror), unless the clause before is about content ("block posts
    about religion and war": war is content too); a year or decade there is dropped."""
    if not _MOD_TOPIC.search(fold(text)):
        return [], text  # no moderation topic: hand the text to the parser untouched
    # "I want spam and ads gone": one block of both
    text = re.sub(r"^\W*(?:i want|i need|i would like|i'd like|id like)\s+(.+?)\s+(?:gone|out|away|removed)"
                  r"(?:\s+of my (?:feed|inbox|messages|comments|dms|timeline))?(?:\s+(?:asap|please|pls|now"
                  r"|thanks))*\W*$", r"block \1", text.strip(), flags=re.I)
    mod: list[str] = []
    rest: list[str] = []
    pieces = _SPLIT.split(text)  # part, separator, part, ...
    after_mod = False  # the piece before was a moderation clause
    pending: str | None = None  # a piece that named a topic without a command ("so much spam today")
    for i in range(0, len(pieces), 2):
        part, joint = pieces[i].strip(), pieces[i - 1].strip() if i else ""
        if not part:
            continue
        bare = _LEADING_FILLER.sub("", _TRAILING_FILLER.sub("", part)).strip()
        bare_folded = fold(bare).strip()
        joined = after_mod and (joint in ("and", "also", "plus") or joint.startswith(","))
        follow_up = _IT.match(fold(part).strip())
        if follow_up and pending is not None:  # "so much spam today, block it": the topic said before
            rest.remove(pending)
            mod.append(f"{follow_up.group('verb')} {topic_phrase(pending)}")
            after_mod, pending = True, None
            continue
        if _MOD_TOPIC.search(fold(part)):
            # a command ("block spam", "spam is fine now"), or a target joined to one ("unblock spam and ads", and
            # "no horror movies and spam": the feed clause's "no" holds for spam too); a statement that only
            # mentions a topic is chat ("my inbox is full of spam", "the Trolls movie was cute": each blocked a
            # category named after the sentence)
            negated_before = bool(rest) and joint in ("and", "or") and bool(_MOD_VERBS.match(fold(rest[-1]).strip()))
            if is_moderation_command(fold(part).strip()) or (joined or negated_before) \
                    and is_bare_target(bare_folded, about=True):
                mod.append(_POLITE_TAIL.sub("", part).strip() or part)  # "block spam and ads too": "ads"
                after_mod = True
            else:
                rest.append(part)
                after_mod, pending = False, part
            continue
        if joined:
            about = bool(_ABOUT.search(fold(mod[-1])))
            feed = _FEED_VALUE.match(bare_folded)
            if feed and not about:  # "block spam and horror": no horror in the feed
                op = moderation_actions(mod)[-1].op
                value = feed.group("value") if feed.group("period") is None else bare_folded
                value = re.sub(r"^the\s+", "", value)
                rest.append(f"no {value}" if op == "block" else f"{value} is fine again")
                continue
            if _YEARS.match(bare_folded):
                continue
            if is_bare_target(bare_folded, about=about) and (joint in ("and", "also", "plus")
                                                             or _names_a_thing(bare_folded)):
                mod.append(bare)
                continue
        rest.append(part)
        after_mod = False
    return mod, ", ".join(rest)


#: Words of chat after a comma ("block spam, so annoying", "hide ads, cheers mate", "block spam, good night").
_CHAT_WORDS = frozenset((
    "so", "much", "very", "pretty", "really", "too", "good", "great", "bad", "awesome", "nice", "annoying", "crazy",
    "sick", "tired", "appreciate", "appreciated", "thanks", "thank", "cheers", "night", "morning", "evening",
    "mate", "finally", "it", "its", "it's", "me", "i", "you", "we", "they", "them", "this", "that", "of", "out",
    "hand", "some", "peace", "please", "lol", "haha", "love", "hate", "ugh", "omg", "wow", "amazing", "perfect",
    "done", "enough", "already", "again", "is", "are", "was", "be", "getting", "driving", "going", "making"))


def _names_a_thing(folded: str) -> bool:
    """After a comma, a target looks like a short noun phrase ("drugs", "online gambling"), not a remark: at most
    three words, none of them chat, and no -ing word but the last ("gambling")."""
    words = re.findall(r"[\w']+", folded)
    return 0 < len(words) <= 3 and not any(w in _CHAT_WORDS for w in words) \
        and not any(w.endswith("ing") for w in words[:-1])


#: Command forms beyond `_MOD_VERBS` / `_NEG_LEAD` / `_UNBLOCK`: "ban spam", "less spam", "enough with the ads",
#: "i dont want spam", "keep hiding spam", "spam should stay blocked".
_COMMAND_FORM = re.compile(
    r"^(?:(?:please|pls|hey|ok|okay|also|and|just|so|now|yo|oh)\W+)*(?:ban|filter|disable|turn off|kill|stop|less"
    r"|fewer|enough (?:with|of)|i (?:dont|don't|do not|never) want|i (?:dont|don't|do not) need|keep|get rid|cut out"
    r"|cut down|put a stop|can the|do something about|nothing|(?:i'm|im|i am) (?:sick|tired) of)\b"
    r"|\b(?:should|must|can|to|will)? ?(?:stay|remain|keep being|be) (?:blocked|hidden|filtered|muted|allowed|unblocked"
    r"|visible|off|gone)\b")


#: A command whose target is the topic said just before ("ugh so much spam, block it").
_IT = re.compile(r"^(?:(?:please|pls|so|ok|okay|just|and|now)\W+)*(?:(?:can|could|would) (?:you|u) (?:please )?)?"
                 r"(?P<verb>block|hide|mute|filter|remove|unblock|unmute|allow) (?:it|them|that|those|these|this)"
                 r"(?: (?:please|pls|too|for me|thanks))*\W*$")


_NOT_TOPIC_WORDS = frozenset(("so", "much", "many", "tons", "lots", "lot", "of", "the", "a", "an", "too", "getting",
                              "get", "got", "i'm", "im", "ugh", "all", "this", "that", "these", "those", "my", "your",
                              "some", "any", "more", "such", "again", "still", "with", "and", "is", "are", "me"))


def topic_phrase(text: str) -> str:
    """The moderation topic a remark names, with up to two words before it: "I'm getting tons of crypto spam" ->
    "crypto spam" (what "block it" after it refers to)."""
    words = re.findall(r"[\w'-]+", fold(text))
    for i in range(len(words) - 1, -1, -1):
        if _MOD_TOPIC.fullmatch(words[i]):
            j = i
            while j > 0 and i - j < 2 and words[j - 1] not in _NOT_TOPIC_WORDS:
                j -= 1
            return " ".join(words[j:i + 1])
    return text


def is_moderation_command(folded: str) -> bool:
    """Does a clause naming a moderation topic ask for a change ("block spam", "no more ads", "don't show me
    trolls", "spam is fine now"), rather than only mention it ("so much spam today")?"""
    return bool(_MOD_VERBS.match(folded) or _NEG_LEAD.match(folded) or _UNBLOCK.search(folded)
                or _COMMAND_FORM.search(folded))


def is_bare_target(folded: str, *, about: bool = False) -> bool:
    """A piece that names only what is meant ("ads", "posts about drugs"): no operation or feed framing of its own,
    not a genre (unless it continues content: `about`), not a closing word, an interjection or who is spoken to."""
    return bool(folded) and not _OPERATION_WORDS.search(folded) and not _NOT_A_TARGET.match(folded) \
        and not _REC_CUE.search(folded) and (about or not _FEED_VALUE.match(folded)) and not _YEARS.match(folded)


def moderation_actions(clauses: list[str]) -> list[ModerationAction]:
    """One action per moderation clause; a bare target shares the operation of the clause before it ("unblock spam
    and ads" unblocks both: "ads" used to be blocked). Anything saying more ("keep hiding spam") has its own."""
    out: list[ModerationAction] = []
    for clause in clauses:
        action = moderation_action(clause)
        if out and is_bare_target(fold(clause).strip(), about=True):  # (a genre here continued content)
            action = action.model_copy(update={"op": out[-1].op})
        out.append(action)
    return out


# "don't allow X", "never let X through", "I don't want to see X again": a negated unblock cue is a block request
_NEGATION = re.compile(r"\b(?:not|never|no longer|nobody|no one|stop|cannot"
                       r"|dont|doesnt|didnt|wont|cant|isnt|arent|shouldnt|wouldnt)\b|n't\b")  # apostrophes get dropped
# "don't block X", "never hide X": a negated block verb is an unblock request
_NEG_BLOCK = re.compile(r"(?:\b(?:not|never|no longer|dont|doesnt)|n't)\s+(?:block|hide|filter|mute|remove)\b")
_NEG_LEAD = re.compile(r"^(?:please\s+|hey\s+|also\s+|and\s+)*(?:i\s+)?(?:(?:don't|do not|dont|never|no longer)\s+"
                       r"(?:ever\s+)?(?:want to see|wanna see|allow|let|show me|block|hide|filter|mute|remove|mind)"
                       r"|stop allowing|stop letting|(?:you can\s+)?(?:show me|let))\s+"
                       r"(?:any\s+|all\s+|the\s+|me\s+)?")


def moderation_op(folded: str) -> str:
    """'block' or 'unblock' for one folded clause; an unblock cue counts only when nothing negates it."""
    if _NEG_BLOCK.search(folded):
        return "unblock"
    m = _UNBLOCK.search(folded)
    if m is None:
        return "block"
    if m.group(0).endswith(" mind"):  # "I don't mind spam": the negation is part of the cue
        return "unblock"
    return "block" if _NEGATION.search(folded[:m.start()]) else "unblock"


def _period_unless_topic(m: re.Match[str]) -> str:
    """A period after a preposition is the topic ("block posts about this weekend", "news about what happened over
    the weekend"), and a bare "today" ends a topic as often as a period ("block news about today"): those stay."""
    said = m.group(0).strip(" .,!?")
    topical = re.search(r"\b(?:about|on|of|regarding|concerning|from|during|over|in|happened|re)$",
                        m.string[:m.start()].strip())
    return m.group(0) if topical or re.fullmatch(r"today|tonight|this (?:evening|afternoon|morning)", said) else ""


def moderation_action(clause: str) -> ModerationAction:
    f = fold(clause).strip()
    op = moderation_op(f)
    target = _MOD_VERBS.sub("", _NEG_LEAD.sub("", f)).strip()
    # a trailing time phrase is framing, not what is blocked ("block spam for now" blocks spam: a moderation
    # setting has no time scope, it stays until unblocked); cut before "through" goes ("spam through friday")
    bare = re.sub(r"\s+(?:for )?(?:" + TIME_PHRASE.pattern + r")\W*$", _period_unless_topic, target)
    period = bare != target  # "block spam for two days": said, but a moderation setting has no end date
    target = re.sub(r"\b(?:again|anymore|any more|please|from now on|is fine|are fine|(?:is|are) (?:ok|okay|alright"
                    r"|allowed)|through)\b", " ", bare)
    target = re.sub(r"^(?:i'm|im|i am) (?:fine|ok|okay) with\s+", "", target.strip())
    target = re.sub(r"\s+(?:for now|right now|for the time being|for a while|now)\W*$", "", target.strip())
    target = re.sub(r"^(?:me|any|all|the)\s+", "", re.sub(r"\s+", " ", target).strip(" .,!"))
    target = re.sub(r"^keep\s+(.+?)\s+away(?:\s+from\s+(?:me|my\s+\w+|us))?$", r"\1", target)  # "keep spam away"
    # "I want spam and ads gone": "spam", "ads"
    target = re.sub(r"^(?:i'm|im|i am) (?:sick|tired) of (?:the |all the |these |those |all )?", "", target)
    wanted_gone = re.fullmatch(r"(?:i (?:want|need|would like|'d like|d like)|i'd like)\s+(.+?)\s+(?:gone|out|away"
                               r"|removed|blocked|hidden)", target)
    target = wanted_gone.group(1) if wanted_gone else target
    return ModerationAction(op=op, target=target[:200] or "unspecified", stated_period=period)
