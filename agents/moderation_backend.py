"""Moderation commands' backend: what "stop showing me crypto spam" does to a user's moderation profile.

The router (:mod:`agents.router`) decides that a clause is a moderation command and which target it names; this
module turns the target into a category name (personal data kept out of it) and applies block / unblock through
the personalization package's ``ProfileService``, one user at a time, inside the store's write transaction.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

from guardrails.errors import RailguardError

from .catalog import fold
from .schema import with_entity_kinds


class ModerationNotAvailableError(RailguardError, RuntimeError):
    """No moderation backend (the personalization package is missing or not configured)."""


class ModerationBackend(Protocol):
    """The moderation operations the router delegates to (one user at a time, ids from the caller)."""

    def block(self, tenant_id: str, user_id: str, target: str, *, actor: str) -> str: ...

    def unblock(self, tenant_id: str, user_id: str, target: str, *, actor: str) -> str: ...


class UnavailableModeration:
    """Placeholder backend: every operation raises ModerationNotAvailableError (clear, typed)."""

    def block(self, tenant_id: str, user_id: str, target: str, *, actor: str) -> str:
        raise ModerationNotAvailableError("moderation commands need the personalization package and a store")

    unblock = block


_BASE = {"spam": ("spam", "scam", "crypto", "phishing", "ads", "advert", "promo"),
         "toxic": ("toxic", "insult", "harass", "slur", "hate speech", "profanity", "swearing", "rude", "troll"),
         "negative": ("negativity", "negative")}
# Whole words only, with their inflections ("rudeness", "trolls", "advertisements", "scammers"): a substring match
# read "jurisprudence" as rude, "trolley" as troll, "downloads" as ads and "cryptography" as crypto, so "unblock
# posts about the trolley problem" unblocked the toxic category.
_INFLECTION = r"(?:s|es|ers?|mers?|my|ming|ing|ings|ment|ments|ness|ity|isements?|ising|tions?)?"
_BASE_WORDS = {base: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + ")" + _INFLECTION + r"\b")
               for base, words in _BASE.items()}


def _base_categories(target: str) -> list[str]:
    """The base categories whose words ``target`` names (as words, not inside other words)."""
    folded = fold(target)
    return [base for base, words in _BASE_WORDS.items() if words.search(folded)]


def base_category_named(target: str) -> str | None:
    """The base category ``target`` is nothing but a word of ("spam", "scams", "insults", "the negativity"), else
    None: "crypto spam from telegram groups ..." names spam's word but is no base category's name."""
    folded = re.sub(r"^(?:the|all|any)\s+", "", fold(target).strip(" .,;:!?'\""))
    hits = [base for base, words in _BASE_WORDS.items() if words.fullmatch(folded)]
    return hits[0] if len(hits) == 1 else None


def category_name(target: str) -> str:
    """'crypto spam' -> 'crypto-spam' (the personalization package's name rule: [a-z][a-z0-9_-]{0,47}).

    Category names are shown in decision logs and the audit trail, so personal data in the target ("block
    messages from bob@example.com", a phone or card number, any word with a digit) never becomes part of one: each
    such span is replaced by its kind ("email", "number"), and a short hash of the whole target keeps two senders
    two categories. A target longer than a name can be is cut, with the same hash, so two long topics that share
    their first words stay two. A person's name is not recognised: it stays in the name (README)."""
    return _category_name(target)


def _category_name(target: str, *, digits: bool = True) -> str:
    """`category_name`; ``digits=False`` names as session 30 did (words with digits kept), an older name."""
    suffix = ""
    scrubbed = with_entity_kinds(target, pad=" ")
    # any other word with a digit may be an identifier the scan does not know (an SSN, a passport, a house or
    # account number, a date of birth): it becomes "number" (review, session 31: "my SSN is 123-45-6789" was kept)
    scrubbed = _WITH_DIGITS.sub(" number ", scrubbed) if digits else scrubbed
    if scrubbed != target:
        suffix = "-" + _name_hash(target)
        target = scrubbed
    elif len(_plain_slug(target, 10_000)) > 48:  # cut short: the hash keeps "... in chicago" and "... in boston" apart
        suffix = "-" + _name_hash(target)
    return _plain_slug(target, 48 - len(suffix)) + suffix


def names_for(target: str) -> list[str]:
    """The names a chat command's category may have: today's first, then older ones (before words with digits were
    replaced, before personal data was kept out of names), so block and unblock find a category made earlier."""
    return list(dict.fromkeys([_category_name(target), _category_name(target, digits=False), _plain_slug(target)]))


def _name_hash(target: str) -> str:
    """8 hex of the plain SHA-256 of the folded target: a name must not change with the deployment's hash key (its
    unblock command finds it by it)."""
    return hashlib.sha256(fold(target).encode("utf-8", "surrogatepass")).hexdigest()[:8]


_WITH_DIGITS = re.compile(r"[^\s,;:!?]*\d[^\s,;:!?]*")


def _plain_slug(target: str, width: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", fold(target)).strip("-")[:width].strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("c-" + slug)[:width]
    return slug or "custom"


class PersonalizationModeration:
    """Adapter over personalization.service.ProfileService (block_new / reblock / unblock)."""

    def __init__(self, store: Any) -> None:
        try:
            from personalization.service import ProfileService  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModerationNotAvailableError(f"personalization package unavailable: {exc}") from None
        if store is None:
            raise ModerationNotAvailableError("moderation commands need a settings store")
        self.store = store

    def _svc(self, tenant_id: str, actor: str) -> Any:
        from personalization.service import ProfileService

        return ProfileService(self.store, tenant_id, actor=actor)

    def block(self, tenant_id: str, user_id: str, target: str, *, actor: str) -> str:
        import personalization as P

        svc = self._svc(tenant_id, actor)
        names = names_for(target)
        outcome: list[str] = []

        # The new-vs-existing decision is taken on the profile read inside the store's write transaction (and
        # taken again if the write is retried), never on an earlier read: two callers sending the same command
        # at once (a double submit) get "blocked new" and "re-blocked", not "category already exists".
        def op(p: Any) -> Any:
            outcome.clear()
            present = [n for n in names if n in p.categories]  # made earlier, perhaps under older names too
            if present:
                outcome.append("re-blocked category " + ", ".join(present))
                for n in present:
                    p = P.reblock(p, n)
                return p
            name = names[0]
            if name in _BASE:
                outcome.append(f"blocked base category {name}")
                return P.reblock(p, name)
            # the "example" is a topic label from the command, not a message: keep the category topical (no
            # concept transfer, see personalization's Category.generalize)
            outcome.append(f"blocked new category {name}")
            return P.block_new(p, name, examples=[target], definition=f"content about {target}",
                               generalize="examples")

        svc.apply(user_id, op)  # ProfileService's atomic read-modify-write (store.update_section)
        return outcome[-1]

    def unblock(self, tenant_id: str, user_id: str, target: str, *, actor: str) -> str:
        import personalization as P

        svc = self._svc(tenant_id, actor)
        names = names_for(target)  # today's name, then older ones (a category made before a naming change)
        requested = names[0]
        outcome: list[str] = []

        def op(p: Any) -> Any:  # decided inside the write transaction, like `block`
            outcome.clear()
            present = [n for n in names if n in p.categories]  # every copy: one left blocked would still block
            if not present:  # no category by any of its names: a base category the target names
                base = _base_categories(target)
                if len(base) != 1:
                    raise _NothingToUnblock  # aborts the transaction: nothing is written
                present = base
            outcome.append("unblocked category " + ", ".join(present))
            for n in present:
                p = P.unblock(p, n)
            return p

        try:
            svc.apply(user_id, op)
        except _NothingToUnblock:
            return f"nothing to unblock for {requested}"
        return outcome[-1]


class _NothingToUnblock(Exception):
    """Raised inside `PersonalizationModeration.unblock`'s write transaction to abort it without a write."""
