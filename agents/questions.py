"""Questions are chat, not commands: which sentences of a message the router hands on (`without_questions`)."""

from __future__ import annotations

import re

from .catalog import fold

#: A question that asks for a change: "can you stop showing me horror?", "could I get more comedies?", "can you
#: recommend more comedies?", "what about no horror?" (not "could you recommend Fargo?": an opinion).
_CHANGE = r"(?:more|less|fewer|only|no|nothing|zero|(?:something|anything|movies|films|stuff) like)\b"
_FILLERS = r"(?:hey|ok|okay|so|and|but|please|um|hmm|also|oh|well|btw|by the way|anyway|anyways|just wondering" \
           r"|i wonder|quick question|then)"
_ASKING = re.compile(r"^(?:" + _FILLERS + r"\W+)*(?:(?:can|could|would|will)\s+"
                     r"(?:you|u|ya)\s+(?:please\s+|kindly\s+|just\s+)?(?=(?:(?:show|give|recommend|suggest|add|find)"
                     r"(?: me| us)? " + _CHANGE + r"|stop|hide|block|unblock|mute|unmute|filter|exclude|skip|avoid"
                     r"|forget|remove|drop|allow|get rid|bring back|only|limit)\b)"
                     r"|(?:can|could|may)\s+(?:i|we)\s+(?:get|have|see)\s+(?=" + _CHANGE + r")"
                     r"|(?:what|how) about\s+(?=" + _CHANGE + r"|(?:something|anything|some)\s)"
                     r"|why not\s+(?=" + _CHANGE + r")"
                     r"|what (?:i|we) (?:really |actually )?(?:want|need|would like|'d like) is\s+)", re.I)
#: How a command opens (said with a rising "?" it is still one: "no horror?", "no horror, what do you think?").
#: Only imperative uses: "never watched Alien, is it good?", "keep in mind ...", "no offense, but ...", "I don't
#: want to be rude, but ..." open questions.
_COMMAND_OPENING = re.compile(
    r"^(?:(?:hey|ok|okay|so|and|but|please|also|oh|then|just|maybe|perhaps|well|which reminds me|speaking of which"
    r"|that reminds me)\W+)*(?:(?:can|could|would|will) (?:you|u) (?:please )?)?"
    r"(?:no(?! (?:offen[sc]e|idea|way|worries|problem|doubt|clue|kidding|joke|pressure|rush|need|one|matter|wonder"
    r"|thanks|sweat|biggie|comment)\b)|nothing(?! (?:much|special|else|new|personal)\b)|none(?! taken\b)"
    r"|only(?! (?:asking|wondering|joking|kidding|curious|because)\b)|more(?! (?:importantly|or less)\b)|less|fewer"
    r"|stop(?! it\b)|never (?:show|recommend|suggest|give|put|play|include|ever|again)|block|unblock|hide|mute|unmute"
    r"|allow|show me|give me|skip|avoid|exclude|remove|drop|forget(?! (?:it|about it|that)\b)|reset|zero|without"
    r"|keep (?:hiding|blocking|filtering|muting|showing|recommending|suggesting|\w+(?: \w+)? (?:away|out|off|coming))"
    r"|bring back|i (?:want|need|don't want(?! to\b)|do not want(?! to\b)|dont want(?! to\b)"
    r"|(?:don't|do not|dont) want to (?:see|watch)|only want|would like|'d like))\b")
#: A sentence opening with a question word is a question, "?" or not ("what year was Fargo released", "how come I
#: still see spam"), unless it asks for a change (`_ASKING`) or a clause of it opens like a command.
_QUESTION_OPENING = re.compile(r"^(?:" + _FILLERS + r"\W+)*(?:what|who|whom|whose|when|where|why|which|how"
                               r"|whats|wheres|whos|hows)\b")
#: What the user has or hasn't done is no command ("never watched Jaws." excluded Jaws).
_EXPERIENCE = re.compile(r"^(?:(?:i've|ive|i have|i|we've|we have|we)\s+)?(?:never|not yet|haven't|havent|have not)\s+"
                         r"(?:ever\s+)?(?:seen|watched|heard|been|liked|cared|finished|understood)\b")
#: A reason after a command is not part of it ("no horror tonight because my son gets nightmares": read whole, the
#: framing heads took it for chat and nothing applied).
_REASON = re.compile(r"\s*,?\s+(?:because|since|cause|cuz|coz|as|so)\s+(?!the\s+(?:\d|(?:early|mid|late|year|nineties"
                     r"|eighties|seventies|sixties|millennium|turn)\b))(?:my|the|our|we|i|i'm|im|it|it's|its|they|he|she"
                     r"|you|there|that|this|his|her|their)\b.*$", re.I)  # "since the 90s" is a date, not a reason


def is_question(sentence: str) -> bool:
    """Chat, not a command: no clause of it opens like a command, and it ends in "?" or opens with a question word.
    "what year was Fargo released", "how come I still see spam", "just wondering, what year was Fargo released?",
    "never watched Alien, is it good?" are questions; "no horror?", "no horror, what do you think?", "Which
    reminds me, no horror" are not."""
    f = fold(sentence).strip()
    if any(_COMMAND_OPENING.match(clause.strip()) for clause in re.split(r"[,;:]", f)):
        return False
    return f.rstrip("!").endswith("?") or bool(_QUESTION_OPENING.match(f))


def without_questions(text: str) -> str:
    """``text`` less its questions (`is_question`): "What year was Fargo released?" or "my kids hate horror, what
    should we do this weekend?" are chat, not commands (they were stored as lasting rules: a hard "title contains
    Fargo" left a one-film feed). A question asking for a change is applied ("can you stop showing me horror?" as
    "stop showing me horror", "what about more comedies?" as "more comedies"); "could you recommend Fargo?" asks
    an opinion and changes nothing."""
    kept = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        asking = _ASKING.match(sentence.strip())
        if asking:
            kept.append(_REASON.sub("", sentence.strip()[asking.end():].rstrip(" ?")))
        elif not is_question(sentence) and not _EXPERIENCE.match(fold(sentence).strip()):
            kept.append(_REASON.sub("", sentence) or sentence)
    return " ".join(kept).strip()
