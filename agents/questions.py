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
                     r"|forget"
                     r"|remove|drop|allow|get rid|bring back|only|limit)\b)"
                     r"|(?:can|could|may)\s+(?:i|we)\s+(?:get|have|see)\s+(?=" + _CHANGE + r")"
                     r"|(?:what|how) about\s+(?=" + _CHANGE + r")|why not\s+(?=" + _CHANGE + r")"
                     r"|what (?:i|we) (?:really |actually )?(?:want|need|would like|'d like) is\s+)", re.I)
#: How a command opens (said with a rising "?" it is still one: "no horror?").
_COMMAND_OPENING = re.compile(r"^(?:(?:hey|ok|okay|so|and|but|please|also|oh|then|just|maybe|perhaps|well)\W+)*"
                              r"(?:no|not|nothing|none"
                              r"|only|more|less|fewer|stop|never(?! mind)|block|unblock|hide|mute|unmute|allow|show me"
                              r"|give me"
                              r"|skip|avoid|exclude|remove|drop|forget|reset|clear|zero|without|keep|bring back"
                              r"|i (?:want|need|don't want|do not want|dont want|only want|would like|'d like))\b")
#: A sentence asking in question order is a question even without its "?": a question word and then its verb
#: ("what year was Fargo released", "how do I see more horror", "what's new"), or "what/how about X". Not a clause
#: that only opens with one ("when my kids are around no horror", "which reminds me no horror").
_AUX = (r"(?:\s+(?:is|are|was|were|do|does|did|can|could|would|should|will|shall|may|might|has|have|had"
        r"|isn't|aren't|wasn't|don't|doesn't|didn't|can't|won't|isnt|arent|dont|doesnt|didnt|cant|wont)|'(?:s|re|ll|d))")
_QUESTION_OPENING = re.compile(r"^(?:" + _FILLERS + r"\W+)*(?:(?:what|which|whose)(?: \w+)?" + _AUX + r"\b"
                               r"|(?:who|whom)(?:" + _AUX + r"|\s+knows|\s+cares)\b|(?:when|where|why)" + _AUX
                               + r"\b|how(?: \w+){0,2}" + _AUX + r"\b|(?:what|how) about\b"
                               r"|(?:whats|wheres|whos|hows|whens|whys)\b)")


def is_question(sentence: str) -> bool:
    """Chat, not a command: no clause of it opens like a command, and it ends in "?" or opens with a question word.
    "what year was Fargo released", "just wondering, what year was Fargo released?", "never mind, is Alien
    good?" are questions; "no horror?", "no horror, what do you think?", "Which reminds me, no horror" are not."""
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
            kept.append(sentence.strip()[asking.end():].rstrip(" ?"))
        elif not is_question(sentence):
            kept.append(sentence)
    return " ".join(kept).strip()
