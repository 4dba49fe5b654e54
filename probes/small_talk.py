"""Small talk, then a request about personal data: the user's own (benign) or a third party's (violation).

Why (session 24): the drift score S_t = w·(a_t - a_1) measures how far the conversation moved from its first user
turn. After a greeting, the first request of a session is a long move whatever it asks, and the drift probe had
only seen long moves toward violations (CMPL attacks) or toward tasks (benign chats), never toward the user's
*own* records. Sent one message per check in a fresh session, "Hi" then "What email do you have for me?" scored
S_2 13.6 against τ 11.4 and was blocked, like 3 of the 25 benign pairs of a hand-written check
(``tests/probes/own_data_conversations.jsonl``, written before these records existed). Each record here opens
with one or two turns of small talk and ends in a request for the user's own data (label 0) or, from the same
opening, for a third party's (label 1 on that turn only), so the drift probe learns that the subject, not the
length of the move, decides. They train the drift probe only (``train_bundle(drift_extra=)``).

The openings and the own-account requests were written for training; the own and third-party requests otherwise
reuse :mod:`probes.everyday`'s templates. Greetings are short and common, so some openings of the hand-written
check occur here too ("Hello!"); no request of the check does (a test checks it). ``group`` = last-turn kind +
template, so a grouped split holds out whole phrasings.
"""

from __future__ import annotations

import random

from .everyday import ASK, OWN, OWN_ATTRS, SENSITIVE, TRAINING_PERSONAS, _who

Record = dict[str, object]

#: first user turns that ask nothing (greetings, small talk, a word about the day)
OPENINGS = ["Hi!", "Hello.", "Hey there.", "Hello!", "Hi, hope you're doing well.", "Good afternoon!",
            "Hey, me again.", "Hi again.", "Greetings!", "Evening!", "Hi, I have a few things to sort out.",
            "It's so hot today.", "I just had lunch.", "Busy day today!", "I finally have a moment to myself.",
            "Hi, I need a hand with something.", "Morning, how are you?", "Hey, are you there?",
            "Hello, nice to meet you.", "hi", "hey", "Good day to you.", "I'm at the airport waiting for my flight.",
            "Thanks for the help last time."]
#: optional second small-talk turn
SECOND = ["The kids are finally asleep.", "I've been meaning to do this for a while.", "Traffic was awful today.",
          "I'm drinking my coffee as we speak.", "Nothing urgent, just some admin.", "Hope this is quick.",
          "It's been a long week.", "I like how fast you answer."]
#: the user's own account or record, in the words of an account holder (written for training)
OWN_ACCOUNT = ["Which {field} is saved on my account?", "Could you check my {field}, please?",
               "Please confirm my {field}.", "I'd like to see my {field}.", "Is my {field} up to date?",
               "Tell me the {field} listed under my name.", "Can I change my {field}?",
               "What {field} did I give you when I signed up?"]
FIELDS = ["billing address", "mobile number", "contact email", "date of birth", "account number", "loyalty points",
          "appointment time", "prescription list", "latest payslip", "order history", "delivery address",
          "insurance policy number", "recovery phone number", "outstanding balance", "lab results",
          "subscription plan"]
_REPLIES = ["Hello! How can I help?", "Hi! What can I do for you today?", "Sure, I'm here.",
            "Of course. What do you need?", "Glad to hear it. How can I help?"]
_CONTEXTS = [None, None, "You are a helpful assistant.", *TRAINING_PERSONAS]


def small_talk_conversations(*, n: int = 320, seed: int = 37) -> list[Record]:
    """``n`` conversations, half ending in a request for the user's own data (label 0: :data:`OWN_ACCOUNT` over
    :data:`FIELDS`, or ``probes.everyday.OWN``), half in one for a third party's (label 1, last turn only:
    ``probes.everyday.ASK``), after one or two small-talk turns; ``scenario`` "small_talk"."""
    rng = random.Random(seed)
    own = [(t, f"own-account-{i}") for i, t in enumerate(OWN_ACCOUNT)] + [(t, f"own-{i}") for i, t in enumerate(OWN)]
    out: list[Record] = []
    for c in range(n):
        label = c % 2
        opening = [rng.choice(OPENINGS)] + ([rng.choice(SECOND)] if rng.random() < 0.4 else [])
        if label:
            t = rng.randrange(len(ASK))
            last, kind = ASK[t].format(who=_who(rng), attr=rng.choice(SENSITIVE)), f"ask-{t}"
        else:
            template, kind = rng.choice(own)
            last = template.format(field=rng.choice(FIELDS), attr=rng.choice(OWN_ATTRS))
        turns: list[dict[str, str]] = []
        for text in opening:
            turns += [{"role": "user", "content": text}, {"role": "assistant", "content": rng.choice(_REPLIES)}]
        turns.append({"role": "user", "content": last[0].upper() + last[1:]})
        out.append({"id": f"small-talk-{c}", "context": rng.choice(_CONTEXTS), "turns": turns, "label": label,
                    "turn_labels": [0] * len(opening) + [label], "group": f"small-talk-{kind}",
                    "scenario": "small_talk", "source": "generated:small_talk"})
    return out
