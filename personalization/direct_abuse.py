"""Direct abuse aimed at the reader vs. benign look-alikes: generated rows for the toxic head (train only).

Why: the toxicity corpora in ../shared/data are tweets with slurs and profanity about third parties (Davidson et
al., 83 % "offensive") and implicit statements about groups (ToxiGen). Second-person abuse in comment, forum and
chat style ("You are a pathetic excuse for an editor, you moron") is rare there, and a hand-written check set
(``tests/personalization/toxicity_check.jsonl``, 30 toxic / 30 benign, written before any head scored it) showed
it: the shipped toxic head flagged 10 of 30 (AUROC 0.95, FPR 0): group hate scored high, personal insults, threats
and dismissals low.

What is generated: insults, dismissals, threats and harassment addressed to "you", in several registers (forum,
wiki talk, @USER replies, chat), with and without profanity (label "toxic"); and benign rows that share their
vocabulary or heat without attacking anyone (label "benign"): civil disagreement, frustration at things, slang
praise ("that set was sick"), self-directed words ("I was such an idiot to forget my keys"), support, questions
about words, polite requests to stop. ``group`` = kind + template so a grouped split holds out phrasings.
Templates and word lists are our own; nothing is drawn from a public test split.

Result (session 13, train part at ``GENERATED_WEIGHT``), toxic texts flagged in the hand-written checks at no benign
one flagged: before this module 10 / 1 / 5, first version 18 / 7 / 5, second version (the templates marked below)
22 / 10 / 11 of 30 / 25 / 25 (AUROC 0.95 -> 0.998, 0.88 -> 0.97, 0.91 -> 0.97). Check 2 was written after the first
version was frozen, check 3 (talk-page style) after the second, so each number right of its freeze is blind;
the second version's new templates were written knowing which rows of checks 1 and 2 the first one missed. Dev
toxicity F1 0.9729 -> 0.9732 (FPR 0.085 -> 0.083), spam and sentiment unchanged; block-new from one example
0.925 -> 0.923 (added FPR 1.65 -> 1.73 %). Recall stays the weak side: the scores rank these texts well but many
sit under the operating point chosen on the corpora's calibration split.

Third version (session 30; the templates marked below, 900 rows a side instead of 600): a fourth check (40 / 40,
short and direct: "You are an idiot.", "Idiot.", threats, wishes of harm) showed the second version catching 18 of
40 ("go kill yourself" 0.50, "You are an idiot" 0.25); the third version was written knowing those misses, then
frozen, and a fifth check (30 / 30, DMs, reviews, news comments) written before any head scored it. Toxic texts
flagged at the 0.5 operating point, second -> third version: checks 1-3 43 -> 52 of 80 (0 benign flagged both),
check 4 18 -> 30 of 40, blind check 5 9 -> 14 of 30 (AUROC 0.859 -> 0.944; 1 of 30 benign flagged both). Dev
toxicity F1 0.9733 -> 0.9712 (FPR 0.082 -> 0.076), sentiment 0.8956 -> 0.8939, spam unchanged; benign dev SMS
flagged toxic 1.8 -> 2.1 %; block-new from one example 0.923 -> 0.921 at added FPR 1.73 -> 1.51 %. The benign
"kill" templates (games, jokes, processes) first pulled "go kill yourself" down to 0.34: "Kill yourself, {noun}." is
a dev template, so three train templates of incitement to self-harm were added before freezing (0.52 now).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

# Weight of a generated row in the heads' fit (personalization.build): the corpora hold ~15,000 toxic train rows,
# so at weight 1 the ~320 generated ones barely move the head. On held-out templates (20 % of the groups) the toxic
# head's AUROC went 0.88 / 0.90 / 0.93 at weight 1 / 3 / 8 while dev toxicity F1 moved 0.9729 -> 0.9723 / 0.9723 /
# 0.9718 and the spam and sentiment heads did not move (session 13, on a random 20 % of the groups; the build's
# sha1 split of the groups gives 0.9695 at 8).
GENERATED_WEIGHT = 8.0

NOUNS = ["idiot", "moron", "loser", "clown", "halfwit", "imbecile", "fool", "jerk", "scumbag", "creep", "lowlife",
         "dimwit", "troll", "bonehead", "waste of space", "piece of garbage", "parasite", "coward", "hypocrite",
         "degenerate", "nitwit", "buffoon", "disgrace", "leech"]
ADJS = ["stupid", "pathetic", "useless", "worthless", "brainless", "ignorant", "disgusting", "miserable", "clueless",
        "spineless", "dumb", "filthy", "sad little", "delusional", "incompetent", "gutless", "braindead", "smug"]
THINGS = ["comment", "edit", "post", "article", "video", "review", "opinion", "take", "answer", "code", "stream"]
ROLES = ["editor", "admin", "poster", "commenter", "moderator", "reviewer", "streamer", "player", "user"]
ACTIVITIES = ["editing this page", "posting", "talking", "replying to me", "spamming the thread", "reverting my edits"]
PREFIXES = ["", "", "", "@USER ", "@USER @USER ", "lol ", "Seriously, ", "Wow. "]

TOXIC = ["You {adj} {noun}, nobody wants you here.", "Shut up, you {adj} {noun}.",
         "Only a {adj} {noun} would write a {thing} like this.", "you are a {adj} {noun}",
         "What a {adj} {noun}. Delete your account.", "Nobody cares what a {noun} like you thinks.",
         "Go away and never come back, you {noun}.", "You're too {adj} to understand anything, {noun}.",
         "I hope you rot, you {adj} {noun}.", "Keep it up and I will make you regret it, {noun}.",
         "Stop {activity}, you {adj} {noun}.", "This {role} is a {adj} {noun} and should be banned.",
         "Everyone here thinks you're a {noun}. Leave.", "Your {thing} is {adj} trash, just like you.",
         "Are you really this {adj} or do you practice?", "Fuck off, you {adj} {noun}.",
         "Shut the fuck up, {noun}.", "You're a {adj} piece of shit.", "Crawl back under your rock, {noun}.",
         "Somebody should shut your {adj} mouth for good.", "I know where you live, {noun}. Watch yourself.",
         "Kill yourself, {noun}.", "You are the most {adj} {role} on this site. Get lost.",
         "Nobody will miss you when you're gone, {noun}.", "Typical {adj} {noun}, can't even read.",
         "Do everyone a favor and disappear, you {noun}.", "Your mom should have raised a less {adj} kid.",
         "Back off before I come over there and shut you up myself.",
         # second version: third-person attacks on someone in the thread, profanity-laden rants, appearance,
         # sexist and xenophobic jabs, wiki-talk threats (the registers of comment-moderation corpora)
         "Whoever wrote this {thing} is a {adj} {noun}.", "The guy above is a complete {noun}.",
         "{name} is a {adj} {noun} and everyone knows it.", "This {role} clearly has no brain, what a {noun}.",
         "What the fuck is wrong with you, {noun}?", "This is fucking bullshit and you're a {noun}.",
         "Screw you and your {adj} {thing}.", "Go to hell, {noun}.", "Piss off, {noun}, nobody asked.",
         "You can shove your {thing} up your ass.", "Damn {noun}, learn to read before you post.",
         "Nobody would ever date someone as ugly as you.", "Shut up, fatso, and go eat another burger.",
         "Women like you belong in the kitchen, not on this {site}.", "Go back where you came from, {noun}.",
         "People like you shouldn't be allowed on the internet.",
         "Stop vandalizing or I'll make sure you get banned, you {noun}.", "You're a nazi {role} and a {noun}.",
         "{name}, you {adj} {noun}, I'm done with your crap.", "Suck it, {noun}. You lost.",
         # third version (session 30): short insults with no adjective or context, threats of violence and wishes
         # of harm, incitement to self-harm, animal and vermin names, demeaning questions (the second version
         # under-flagged them)
         "{Noun}.", "You are {a_noun}.", "you're {a_noun}", "ur {a_noun} lol", "what {a_noun}", "you {noun}",
         "{Adj} {noun}.", "Are you {adj}?", "Are you really this {adj}?", "stfu {noun}", "Nobody asked, {noun}.",
         "Imagine being this {adj}.", "You {animal}.", "You {adj} little {animal}.", "Get lost, you {animal}.",
         "Say that again and I'll {violence}.", "Keep it up and I'm going to {violence}.",
         "One more word and I swear I'll {violence}.", "I hope you {harm}.", "You deserve to {harm}.",
         "Go {die}, {noun}.", "I wish you would {harm}.", "You're a waste of {waste}.",
         "Why are you so {adj}?", "Your {kin} must be ashamed of you.", "I'd {violence} if I ever met you.",
         "just {die} already", "Do the world a favor and {die}.", "kys {noun}", "Nobody would care if you {died}."]
BENIGN = ["I think your {thing} is wrong about this; here is a source that says otherwise.",
          "I was such an {noun2} to forget my keys again today.", "Ugh, this {adj2} printer jammed again.",
          "That {show} was sick, best one I've seen all year.", "Please stop {activity} without discussing it first.",
          "Is '{noun}' considered an offensive word these days?", "Don't be so hard on yourself, you're not a {noun} "
          "for making one mistake.", "The {role} made a fair call; I disagree, but I get why.",
          "This update is {adj2}, the battery now dies in an hour.", "Thanks for the {thing}, it really helped me.",
          "Good game everyone, we'll get them next time.", "I strongly disagree with this {thing}, but I appreciate "
          "the effort you put into it.", "The villain in the novel is a real {noun}, which makes the ending great.",
          "@USER fair point, I hadn't thought about it that way", "Could a {role} please look at this thread? It "
          "keeps going off topic.", "My little brother is a goofball but I love him.",
          "That referee was awful tonight, honestly the worst calls all season.",
          "I hate Sundays when the shops are closed.", "Let's keep the discussion civil, please.",
          "Your {thing} has a typo in the second paragraph, otherwise great work.",
          # second version: everyday talk-page and comment traffic, mild profanity that attacks no one
          "I've added a citation for the claim about {topic} in the second paragraph.",
          "Thanks for reverting the vandalism on the {topic} page.",
          "Could you explain why you removed the section on {topic}?",
          "The image caption is wrong, it shows the old building.",
          "Please assume good faith; I was only fixing the formatting.",
          "This claim about {topic} needs a reliable source, not a blog.", "I agree with the merge proposal.",
          "Great {thing}, {name}, thanks for sharing!", "Sorry, I didn't mean to delete your comment.",
          "What the heck happened to the formatting on this page?", "Holy crap, that was a great save.",
          "Damn, that {show} was good.", "{name}, can you review my {thing} when you have time?",
          "I'm not convinced by the argument about {topic}, but it's well written.",
          "Is there a style guide for articles about {topic}?",
          # third version: short praise and chat, violent words that threaten no one, animals, hopes and wishes
          "{Praise}.", "You are {a_praise}.", "you're {a_praise} lol", "what {a_good}", "Are you {okay}?",
          "I'll {meet} you {when}.", "I hope you {wish}.", "You deserve {reward}.", "{Animal_pl} are {animal_fact}.",
          "A {animal} got into the {place} again.", "This {boss} keeps killing me.", "That joke killed me lol",
          "Kill the {process} and restart it.", "I could kill for a {treat} right now.",
          "Why is the {thing} so slow today?", "My {kin} is the best.", "I'm {a_noun2} sometimes, sorry.",
          "Stop, you're too kind.", "Nobody asked, but here is my {treat} recipe."]
NOUNS_SELF = ["idiot", "fool", "dummy", "klutz"]
ADJS_THINGS = ["stupid", "useless", "terrible", "awful", "garbage", "pathetic"]
SHOWS = ["concert", "skate trick", "guitar solo", "goal", "movie", "trailer", "dunk"]
NAMES = ["Kevin", "Priya", "Marco", "Jenna", "Tobias", "Aisha", "Derek", "Mei", "Luis", "Hannah"]
SITES = ["forum", "server", "site", "subreddit", "channel"]
A_NOUNS = ["an idiot", "a moron", "an imbecile", "a loser", "a clown", "a joke", "a disgrace", "a coward",
           "a dumbass", "a freak", "a halfwit", "a nobody"]
ANIMALS = ["pig", "rat", "cockroach", "snake", "worm", "dog", "weasel", "maggot", "leech", "slug"]
VIOLENCE = ["break your face", "beat the crap out of you", "punch your teeth in", "hurt you", "end you",
            "smash your head in", "make you bleed", "wreck you"]
HARMS = ["die", "get cancer", "choke on it", "rot in a cell", "lose everything", "get hit by a truck",
         "never wake up", "suffer"]
DIES = ["die", "jump off a bridge", "die in a hole", "choke", "drown yourself", "kill yourself", "hang yourself"]
DIEDS = ["died", "killed yourself", "disappeared", "were gone tomorrow", "got hit by a bus"]
WASTES = ["oxygen", "skin", "air", "everyone's time", "a human being"]
KINS = ["mom", "dad", "family", "parents", "mother"]
PRAISES = ["Legend", "Genius", "Brilliant", "Amazing", "Lovely", "Nice one", "Champion", "Well said"]
A_PRAISES = ["an angel", "a genius", "a lifesaver", "a star", "a legend", "a gem", "a sweetheart", "so kind"]
A_GOODS = ["a day", "a game", "a view", "a relief", "a save", "a catch", "a goal", "a week"]
OKAYS = ["okay", "coming tonight", "free tomorrow", "sure", "still at work", "awake", "home yet"]
MEETS = ["call", "text", "see", "meet", "pick up", "help"]
WHENS = ["tomorrow", "after work", "later", "at six", "on Monday"]
WISHES = ["feel better soon", "have a great trip", "win", "get the job", "enjoy the show", "sleep well"]
REWARDS = ["a break", "the promotion", "some rest", "the award", "better"]
ANIMAL_FACTS = ["smarter than people think", "fascinating", "cute", "everywhere in this city", "good swimmers"]
PLACES = ["garage", "kitchen", "shed", "basement", "garden"]
BOSSES = ["boss", "level", "final stage", "dungeon", "raid"]
PROCESSES = ["process", "server", "app", "job", "container"]
TREATS = ["pizza", "coffee", "burger", "taco", "cake"]
NOUNS_SELF_A = ["an idiot", "a fool", "a klutz", "a dummy"]
TOPICS = ["the Roman Empire", "climate policy", "the 1998 World Cup", "jazz history", "vaccines", "the city council",
          "railway gauges", "medieval castles", "tax law", "the band's second album"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(adj=rng.choice(ADJS), noun=rng.choice(NOUNS), thing=rng.choice(THINGS),
                           role=rng.choice(ROLES), activity=rng.choice(ACTIVITIES), noun2=rng.choice(NOUNS_SELF),
                           adj2=rng.choice(ADJS_THINGS), show=rng.choice(SHOWS), name=rng.choice(NAMES),
                           site=rng.choice(SITES), topic=rng.choice(TOPICS), Noun=rng.choice(NOUNS).capitalize(),
                           Adj=rng.choice(ADJS).capitalize(), a_noun=rng.choice(A_NOUNS), animal=rng.choice(ANIMALS),
                           violence=rng.choice(VIOLENCE), harm=rng.choice(HARMS), die=rng.choice(DIES),
                           died=rng.choice(DIEDS), waste=rng.choice(WASTES), kin=rng.choice(KINS),
                           Praise=rng.choice(PRAISES),
                           a_praise=rng.choice(A_PRAISES), a_good=rng.choice(A_GOODS), okay=rng.choice(OKAYS),
                           meet=rng.choice(MEETS), when=rng.choice(WHENS), wish=rng.choice(WISHES),
                           reward=rng.choice(REWARDS), Animal_pl=rng.choice(ANIMALS).capitalize() + "s",
                           animal_fact=rng.choice(ANIMAL_FACTS), place=rng.choice(PLACES), boss=rng.choice(BOSSES),
                           process=rng.choice(PROCESSES), treat=rng.choice(TREATS), a_noun2=rng.choice(NOUNS_SELF_A))


def direct_abuse_records(*, n_per_label: int = 900, seed: int = 41) -> list[dict[str, Any]]:
    """``n_per_label`` toxic and as many benign rows, task "toxicity", ids ``abuse-<kind>-<n>-<text digest>``."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for label, templates in (("toxic", TOXIC), ("benign", BENIGN)):
        made = tries = 0
        while made < n_per_label and tries < 50 * n_per_label:
            tries += 1
            t = rng.randrange(len(templates))
            prefix, body = rng.choice(PREFIXES), _fill(templates[t], rng)
            text = prefix + (body[0].lower() + body[1:] if prefix in ("Seriously, ", "lol ") else body)
            if text in seen:
                continue
            seen.add(text)
            kind = "toxic" if label == "toxic" else "benign"
            digest = hashlib.sha1(text.encode()).hexdigest()[:8]  # ids change with the text: embedding caches
            out.append({"id": f"abuse-{kind}-{made}-{digest}", "text": text, "label": label, "task": "toxicity",
                        "group": f"abuse-{kind}-{t}", "source": "generated:direct_abuse"})
            made += 1
    return out
