"""Cross-turn "activation velocity" tracking per session.

NeuroFilter's drift score is S_t = sum_{k=2..t} w·(a_k - a_{k-1}) = w·(a_t - a_1): turn 1 is the
conversation's own baseline, so the offset a system prompt or profile puts on the activation cancels and only
the *movement* of the conversation along the privacy direction counts. We keep a_1, a_{t-1} and S_t only (O(d)
state, never the history), update S incrementally, and persist the state through any object with the spine
store's ``get_state/put_state`` so a session survives a process restart. State is keyed by
(tenant, user, session) and stamped with the probe's identity so a retrained probe never reuses stale state.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np

from guardrails.decision import keyed_sha256
from guardrails.errors import InvalidInputError, StoreError

from .probe import ProbeArtifact

STATE_KEY = "privacy_velocity"
_SESSION_LOCKS = tuple(threading.Lock() for _ in range(64))  # striped: per-session atomic updates, bounded memory


@runtime_checkable
class StateStore(Protocol):
    """The two methods of guardrails.store.SettingsStore the tracker needs (JSON dict per session key)."""

    def get_state(self, tenant_id: str, user_id: str, session_id: str, key: str) -> dict[str, Any] | None: ...

    def put_state(self, tenant_id: str, user_id: str, session_id: str, key: str,
                  state: dict[str, Any]) -> None: ...


class InMemoryStateStore:
    """Process-local StateStore for tests and for deployments without a spine store (no restart survival).

    Bounded: at most ``max_entries`` sessions (the least recently written go first; losing one only re-baselines
    that session), and `prune_state` drops those idle for longer than a TTL, as the SQL store does."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._d: OrderedDict[tuple[str, str, str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get_state(self, tenant_id: str, user_id: str, session_id: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            v = self._d.get((tenant_id, user_id, session_id, key))
            return dict(v[1]) if v is not None else None

    def _put(self, k: tuple[str, str, str, str], state: Mapping[str, Any]) -> None:
        self._d[k] = (time.time(), dict(state))
        self._d.move_to_end(k)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def put_state(self, tenant_id: str, user_id: str, session_id: str, key: str,
                  state: dict[str, Any]) -> None:
        with self._lock:
            self._put((tenant_id, user_id, session_id, key), state)

    def update_state(self, tenant_id: str, user_id: str, session_id: str, key: str,
                     fn: Callable[[dict[str, Any] | None], Mapping[str, Any] | None]) -> dict[str, Any] | None:
        """Atomic read-modify-write (``fn`` returns the new state, or None to leave it)."""
        k = (tenant_id, user_id, session_id, key)
        with self._lock:
            old = self._d.get(k)
            new = fn(dict(old[1]) if old is not None else None)
            if new is None:
                return dict(old[1]) if old is not None else None
            self._put(k, new)
            return dict(new)

    def erase_user(self, tenant_id: str, user_id: str) -> dict[str, int]:
        """Forget every session of one user (as `SettingsStore.erase_user` does for its session state)."""
        with self._lock:
            gone = [k for k in self._d if k[0] == tenant_id and k[1] == user_id]
            for k in gone:
                del self._d[k]
        return {"session_state": len(gone)}

    def prune_state(self, older_than: timedelta) -> int:
        cutoff = time.time() - older_than.total_seconds()
        with self._lock:
            stale = [k for k, (at, _) in self._d.items() if at < cutoff]
            for k in stale:
                del self._d[k]
        return len(stale)

    def __len__(self) -> int:
        return len(self._d)


def _enc(a: np.ndarray) -> str:
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode("ascii")


def _dec(s: str, d: int) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), dtype="<f4")
    if a.shape != (d,):
        raise ValueError("stored activation has the wrong width")
    return a.astype(np.float32)


@dataclass
class VelocityState:
    """What survives between turns: the first and previous activation, the running score, the turn count."""

    turn: int
    a1: np.ndarray
    prev: np.ndarray
    score: float
    probe_id: str
    # Digests (never text), when the caller gave the conversation: the one last scored, and its opening up to the
    # first user turn (where the baseline a_1 comes from).
    digest: str | None = None
    head: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"turn": self.turn, "a1": _enc(self.a1), "prev": _enc(self.prev), "score": self.score,
                "probe_id": self.probe_id, "digest": self.digest, "head": self.head}

    @classmethod
    def from_json(cls, d: dict[str, Any], dim: int) -> VelocityState:
        """Parse what `to_json` stored; ValueError for anything it could not have written (a turn below 1, a
        non-finite score or activation), which the tracker reads as no state."""
        digest, head = d.get("digest"), d.get("head")
        turn, score = d["turn"], float(d["score"])
        if type(turn) is not int or turn < 1 or not math.isfinite(score):
            raise ValueError("stored drift state is out of range")
        st = cls(turn=turn, a1=_dec(d["a1"], dim), prev=_dec(d["prev"], dim), score=score,
                 probe_id=str(d["probe_id"]), digest=str(digest) if digest is not None else None,
                 head=str(head) if head is not None else None)
        if not (np.isfinite(st.a1).all() and np.isfinite(st.prev).all()):
            raise ValueError("stored drift state holds a non-finite activation")
        return st


def conversation_digest(messages: Sequence[Mapping[str, str]]) -> str:
    """SHA-256 (keyed under $RAILGUARD_HASH_KEY when set: `guardrails.decision.keyed_sha256`) over roles and
    contents (length-prefixed): identifies a conversation without keeping its text."""
    h = keyed_sha256()
    for m in messages:
        h.update(f"{m['role']}\x00{len(m['content'])}\x00{m['content']}\x00".encode())
    return h.hexdigest()


def user_message_count(messages: Sequence[Mapping[str, str]]) -> int:
    """How many user messages a conversation holds (its user turn count: the last one is the turn being checked)."""
    return sum(1 for m in messages if m.get("role") == "user")


def has_history(messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether the checked messages hold an earlier user turn than the newest: a system prompt before the only user
    message is no history (the client sent its newest message alone), nor is an assistant message, for callers of
    the tracker that allow one there (the privacy detector refuses conversations that open with the assistant)."""
    return user_message_count(messages) > 1


def opening_of(messages: Sequence[Mapping[str, str]]) -> Sequence[Mapping[str, str]]:
    """The conversation up to and including its first user turn (system prompt included)."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages) - 1)
    return messages[: first + 1]


def alone_of(messages: Sequence[Mapping[str, str]]) -> list[Any]:
    """The conversation's last user message behind its leading system message(s) only, without the turns between."""
    lead = [m for m in messages[: next((i for i, m in enumerate(messages) if m["role"] != "system"), 0)]]
    return [*lead, messages[-1]]


class VelocityTracker:
    """Per-session cumulative drift along a multi-turn probe direction.

    ``update`` must be called once per user turn, before the assistant answers it, with that turn's
    activation at the probe's layer; it returns (S_t, t). Unreadable or foreign state restarts the session
    at turn 1 rather than raising: a guard that cannot read its memory should re-baseline, and the
    single-turn probe still scores the turn.

    Given the scored ``conversation`` (validated messages), ``update`` also tells a new turn from two things
    that are not one: the same conversation checked again (a retry, or an agent re-checking its pending turn)
    returns the stored (S_t, t) unchanged, and a history whose opening changed (system prompt or first user turn
    edited: the baseline a_1 came from another conversation) starts its own trajectory at turn 1. A later turn
    edited or withheld (a blocked turn replaced in an agent's thread) keeps the trajectory: S_t = w·(a_t - a_1)
    still measures drift from the same opening. A conversation with one user message carries no history (a client
    sending only its newest message, perhaps after a system prompt) and always continues the session, unless the
    caller says it is the one last scored grown by more user messages sent before any reply (``grown_from``): that
    turn again, re-scored at the same turn.
    """

    def __init__(self, probe: ProbeArtifact, store: StateStore | None = None, key: str = STATE_KEY) -> None:
        if probe.meta.kind != "multiturn":
            raise InvalidInputError("VelocityTracker needs a multi-turn probe artifact")
        self.probe = probe
        self.store: StateStore = store if store is not None else InMemoryStateStore()
        self.key = key
        self.dim = probe.coef.shape[0]
        layers = "+".join(map(str, probe.layers))  # "12" for a one-layer probe, as before
        # Which probe a trajectory belongs to: its weights (a probe loaded from disk has their digest), its layers
        # and its training time. Ids of the older form ("<model fingerprint>:<layers>:<created_at>") of the same
        # layers and training time are accepted too: re-stamping a probe's model fingerprint (as a release did
        # when the fingerprint's definition changed) must not restart every session's drift across an upgrade.
        self._trained = f"{layers}:{probe.meta.created_at}"
        weights = probe.meta.weights_sha256
        self.probe_id = f"w{weights[:16]}:{self._trained}" if weights else \
            f"{probe.meta.model_fingerprint}:{self._trained}"

    def load(self, tenant_id: str, user_id: str, session_id: str) -> VelocityState | None:
        return self._parse(self.store.get_state(tenant_id, user_id, session_id, self.key))

    def step(self, state: VelocityState | None, a_t: np.ndarray) -> VelocityState:
        """Pure update (no I/O): S_t = S_{t-1} + w·(a_t - a_{t-1}); turn 1 sets the baseline, S_1 = 0."""
        a = np.asarray(a_t, dtype=np.float32).reshape(-1)
        if a.shape != (self.dim,) or not np.isfinite(a).all():
            raise InvalidInputError("activation must be a finite vector of the probe's width")
        if state is None:
            return VelocityState(turn=1, a1=a, prev=a, score=0.0, probe_id=self.probe_id)
        delta = float(self.probe.coef @ (a - state.prev))
        if not np.isfinite(delta):  # finite activations, overflowing weights: never store a NaN trajectory
            raise InvalidInputError("non-finite drift step (corrupt or overflowing probe weights)")
        return VelocityState(turn=state.turn + 1, a1=state.a1, prev=a, score=state.score + delta,
                             probe_id=self.probe_id)

    def regrow(self, state: VelocityState, a_t: np.ndarray) -> VelocityState:
        """Pure update (no I/O): the scored turn read again, grown (more user messages sent before any reply):
        S_t = S_{t-1} + w·(a_t' - a_{t-1}) = S_t + w·(a_t' - a_t), at the same turn; at turn 1, the new baseline."""
        if state.turn == 1:
            return self.step(None, a_t)
        now = self.step(state, a_t)
        return VelocityState(turn=state.turn, a1=state.a1, prev=now.prev, score=now.score, probe_id=self.probe_id)

    def start(self, a_1: np.ndarray, a_t: np.ndarray, turn: int) -> VelocityState:
        """A trajectory first seen at user turn ``turn`` of a conversation sent whole: its baseline ``a_1`` read from
        the conversation's own opening, so S_t = w·(a_t - a_1) is what the turn-by-turn sum would have reached."""
        first = self.step(None, a_1)
        now = self.step(first, a_t)
        return VelocityState(turn=max(2, int(turn)), a1=first.a1, prev=now.prev, score=now.score,
                             probe_id=self.probe_id)

    def needs_opening(self, tenant_id: str, user_id: str, session_id: str,
                      conversation: Sequence[Mapping[str, str]]) -> bool:
        """Whether ``update`` would start a trajectory for this conversation sent with its history (no state for the
        session, or state from another opening): the caller then reads the opening's activation for ``update``."""
        if not has_history(conversation):
            return False
        state = self.load(tenant_id, user_id, session_id)
        return state is None or (state.head is not None and state.head != conversation_digest(opening_of(conversation)))

    def _parse(self, raw: dict[str, Any] | None) -> VelocityState | None:
        if not raw:
            return None
        try:
            st = VelocityState.from_json(raw, self.dim)
        except (KeyError, ValueError, TypeError, OverflowError, AttributeError):  # unreadable: a new baseline
            return None
        same = st.probe_id == self.probe_id or (
            self.probe_id.startswith("w") and not st.probe_id.startswith("w")
            and st.probe_id.partition(":")[2] == self._trained)
        return st if same else None

    def update(self, tenant_id: str, user_id: str, session_id: str, a_t: np.ndarray, *,
               conversation: Sequence[Mapping[str, str]] | None = None,
               opening: np.ndarray | None = None, grown_from: Collection[str] = ()) -> tuple[float, int]:
        """Advance the session by this turn and return (S_t, t). Read, step and write are one atomic update
        (the store's `update_state`, else a per-session lock in this process): two turns of one session checked
        at once (a double submit, two tabs) are counted as two turns, never both as the same one.

        ``opening``: the activation of the conversation's opening (its first user turn, as it was read at turn 1).
        A trajectory that starts here for a conversation sent with its history (a new session id, a restart
        without state, an edited opening) starts from it, at the conversation's user turn count: without it the
        baseline was this turn, so S_t was 0 and a client could turn the drift off by sending each turn under a
        new session id.

        ``grown_from``: digests (`conversation_digest`) of this conversation as it stood at each earlier message of
        its last run of user messages (sent before any reply, read joined: :func:`probes.segments.turn_prefixes`).
        When the one last scored is among them, this is that turn grown: re-scored at the same turn, not a new one
        (a client checking each message as it arrives had its turn counted twice, review of session 37). Digests of
        the messages as sent, so a new message that merely starts with the previous one is a new turn."""
        digest = head = None
        if conversation is not None:
            digest, head = conversation_digest(conversation), conversation_digest(opening_of(conversation))
        out: list[tuple[float, int]] = []

        def advance(raw: dict[str, Any] | None) -> dict[str, Any] | None:
            state = self._parse(raw)
            grown = False
            if state is not None and digest is not None and state.digest is not None:
                if digest == state.digest:
                    out.append((state.score, state.turn))  # the scored turn again: twice would fake a drift
                    return None
                assert conversation is not None
                grown = state.digest in grown_from
                if not grown and has_history(conversation) and head != state.head:
                    state = None  # another opening: the old baseline a_1 belongs to another conversation
            if grown:
                assert state is not None
                st = self.regrow(state, a_t)
            elif state is None and opening is not None and conversation is not None and has_history(conversation):
                st = self.start(opening, a_t, user_message_count(conversation))
            else:
                st = self.step(state, a_t)
            # the opening's digest is kept, unless turn 1 itself grew (the opening is then this conversation's)
            st.head = head if state is None or state.head is None or (grown and state.turn == 1) else state.head
            st.digest = digest
            out.append((st.score, st.turn))
            return st.to_json()

        atomic = getattr(self.store, "update_state", None)
        if callable(atomic):
            atomic(tenant_id, user_id, session_id, self.key, advance)
        else:  # a get/put-only store: atomic within this process
            with _SESSION_LOCKS[hash((tenant_id, user_id, session_id)) % len(_SESSION_LOCKS)]:
                new = advance(self.store.get_state(tenant_id, user_id, session_id, self.key))
                if new is not None:
                    self.store.put_state(tenant_id, user_id, session_id, self.key, new)
        if not out:  # a store whose update_state never called `advance`: fail (closed), never guess a turn
            raise StoreError("the state store's update_state did not call its update function")
        return out[-1]
