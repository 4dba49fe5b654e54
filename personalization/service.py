"""ProfileService: the profile operations applied through the settings store (versioned, audited).

Why a thin layer: every operation is a pure function of the stored section (see `profile_ops.py`), so each one runs
as `store.update_section(tenant, user, "moderation", fn, actor=...)` inside the store's write lock. Concurrent
edits of one user's profile therefore never lose updates, and a write can only ever touch the (tenant, user)
key it names: one user's profile is never read or written on behalf of another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from guardrails.errors import ConfigError, InvalidInputError

from . import profile as P
from . import profile_ops as ops
from .profile import Action, ModerationProfile
from .profile_io import export_json, load_profile_json
from .user_texts import as_texts, clean_list, with_variations

SECTION = "moderation"


class ProfileService:
    """Per-user moderation profiles on top of a `guardrails.store.SettingsStore`."""

    def __init__(self, store: Any, tenant_id: str = "default", *, actor: str = "personalization") -> None:
        if store is None:
            raise ConfigError("ProfileService needs a settings store (guardrails.store.SettingsStore)")
        self.store = store
        self.tenant_id = tenant_id
        self.actor = actor

    def _apply(self, user_id: str, op: Callable[[ModerationProfile], ModerationProfile],
               actor: str | None) -> ModerationProfile:
        return self._replace(user_id, lambda section: op(P.parse_profile(section)), actor)

    def _replace(self, user_id: str, op: Callable[[dict[str, Any]], ModerationProfile],
                 actor: str | None, *, create: bool = True) -> ModerationProfile:
        """`op` of the stored section as it is, unparsed: what replaces a profile whole (reset, import) must work
        even where the stored one no longer reads."""
        def fn(section: dict[str, Any]) -> dict[str, Any]:
            new = op(section)
            if not isinstance(new, ModerationProfile):  # an `apply` op returning a dict or None: nothing written
                raise InvalidInputError(f"a profile operation must return a ModerationProfile, got "
                                        f"{type(new).__name__}")
            return new.model_dump(mode="json")

        stored = self.store.update_section(self.tenant_id, user_id, SECTION, fn, actor=actor or self.actor,
                                           create=create)
        return P.parse_profile(stored.settings.get(SECTION))

    def apply(self, user_id: str, op: Callable[[ModerationProfile], ModerationProfile], *,
              actor: str | None = None) -> ModerationProfile:
        """Run `op` (a pure function of `personalization.profile`, or a composition of them) on the profile read
        inside the store's write transaction, and store its result (versioned, audited). Decide *inside* `op`
        what depends on the current profile: a decision taken on an earlier `get` races a concurrent writer.
        `op` may run again if the write is retried; an exception it raises aborts the write."""
        return self._apply(user_id, op, actor)

    def get(self, user_id: str) -> ModerationProfile:
        """The user's profile; a user who never set one gets the default profile (nothing is written)."""
        return P.parse_profile(self.store.get(self.tenant_id, user_id).settings.get(SECTION))

    def block_new(self, user_id: str, name: str, *, examples: Iterable[str] = (), definition: str = "",
                  counter_examples: Iterable[str] = (), action: Action = "block",
                  threshold: float | None = None, generalize: P.Generalize = "auto",
                  actor: str | None = None) -> ModerationProfile:
        ex, cx = as_texts(examples, "examples"), as_texts(counter_examples, "counter_examples")
        # Errors raised inside the op (typed: InvalidInputError / ConfigError) abort the transaction: no write.
        return self._apply(user_id, lambda p: ops.block_new(p, name, examples=ex, definition=definition,
                                                            counter_examples=cx, action=action,
                                                            threshold=threshold, generalize=generalize), actor)

    def unblock(self, user_id: str, name: str, *, actor: str | None = None) -> ModerationProfile:
        return self._apply(user_id, lambda p: ops.unblock(p, name), actor)

    def reblock(self, user_id: str, name: str, action: Action = "block", *,
                actor: str | None = None) -> ModerationProfile:
        """`profile_ops.reblock` on the stored profile: the unblocked category acts again (block, or warn)."""
        return self._apply(user_id, lambda p: ops.reblock(p, name, action), actor)

    def set_threshold(self, user_id: str, name: str, threshold: float, *,
                      actor: str | None = None) -> ModerationProfile:
        return self._apply(user_id, lambda p: ops.set_threshold(p, name, threshold), actor)

    def extend(self, user_id: str, name: str, texts: Iterable[str] | str, *, counter: bool = False,
               n_variations: int = 0, actor: str | None = None) -> ModerationProfile:
        # once, before the write transaction: a generator must not be consumed by a retried write, and generating
        # variations must not hold the store's write lock
        items = with_variations(as_texts(texts, "texts"), n_variations)
        clean_list(items, what="examples" if not counter else "counter_examples")  # too many: refused before it
        return self._apply(user_id, lambda p: ops.extend(p, name, items, counter=counter), actor)

    def remove(self, user_id: str, name: str, *, actor: str | None = None) -> ModerationProfile:
        return self._apply(user_id, lambda p: ops.remove(p, name), actor)

    def reset(self, user_id: str, *, actor: str | None = None) -> ModerationProfile:
        """Store the default profile for the user (every user category dropped); versioned and audited. A user with
        no stored settings already reads the default: nothing is written for them."""
        return self._replace(user_id, lambda _section: ops.reset(), actor, create=False)

    def list(self, user_id: str) -> list[dict[str, Any]]:
        return ops.list_categories(self.get(user_id))

    def export_json(self, user_id: str) -> str:
        """The user's profile as `profile_io.export_json` text (user data: includes their example texts)."""
        return export_json(self.get(user_id))

    def import_json(self, user_id: str, text: str | bytes, *, actor: str | None = None) -> ModerationProfile:
        data = load_profile_json(text)  # parse outside the transaction: bad JSON never opens a write
        # validated against the profile it replaces: an export of a profile an earlier release stored larger than
        # today's limits imports back into its own user (as any write may keep what it held), not into another
        def imported(section: dict[str, Any]) -> ModerationProfile:
            profile = P.parse_profile(data, new=True, previous=section)
            for name, cat in profile.categories.items():  # as profile_io.import_json: "Scam" vs "scam" is refused
                P.check_contradictions(name, cat)
            return profile

        return self._replace(user_id, imported, actor)
