"""Embedding backend (all-MiniLM-L6-v2): base-category heads plus per-user prototype categories.

Why this design:
- Base categories (toxic, spam, negative) get a logistic-regression head on sentence embeddings, trained only
  on the shared train files (minus our dev split) and stored as safetensors + JSON (never pickle), so loading it
  can't run code. The heads read a LoRA-adapted copy of the encoder (`ADAPTER_PATH`; frozen MiniLM carries
  little sentiment: dev F1 0.826 → 0.894 adapted) while user categories keep the plain encoder's space, where
  topics stay apart (the adapted space put "crypto spam" next to "only horror movies"). A default profile costs
  one encoder pass; a profile with user texts two. Deltas that adapt only the top layers
  (`scripts/train_harm_adapter.py --from-layer K`) share the lower K layers between both spaces
  (`Encoder.encode_with_plain`): top-2 deltas made a user-category profile run at 0.73 of a default one's rate
  instead of 0.51, but lost 0.017 dev sentiment F1 and 0.04 block-new (against 2-epoch full-depth deltas), so the
  shipped deltas still cover all 6 layers.
- User categories have 1-50 examples: too few to train anything. Each is scored by a nearest-prototype margin:
  similarity to the category's examples (and definition) minus similarity to benign anchors and the user's
  counter-examples. That works from one example and needs no retraining when the user edits the profile.
- One example pins a topic, not a style (1-shot prototype recall on held-out toxic/spam/negative text: 0.25).
  An LLM generalises from the example because it already knows the concept; the analogue here is concept
  transfer: when a base head flags every user example, the user category also scores that head at its strict
  operating point (`Category.generalize`, default "auto"). Such a category spends its ~2 % benign-FPR budget
  (the added FPR users tolerate for a new category) on the head, at 2 % averaged over text domains, and keeps
  its example prototype at 0.2 %, just enough for near-copies of the examples: the generalising part is the
  better detector, and two 1 % detectors OR-ed together added 2.1 % FPR for less recall (dev block-new 0.864
  at 2.05 % added FPR vs 0.906 at 1.48 %).
- Scores are comparable across categories and users because every category is calibrated the same way: its
  threshold is the (1 - target_fpr) quantile of its raw score on held-out benign text, and a logistic map puts
  that operating point at 0.5. A user threshold in [0, 1] then means the same thing for every category.
- User texts are only ever embedded: a hostile definition is a vector like any other and cannot alter the base
  heads or other categories' scores.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from guardrails.decision import text_hash
from guardrails.errors import ConfigError, InvalidInputError
from guardrails.text import coerce_text

from .bank import ExampleBank
from .heads import BaseHeads
from .heads import calibrate as calibrate  # re-exported: callers fit their own operating points
from .profile import BASE_CATEGORIES, Category, ModerationProfile
from .prototype import PrototypeCategory
from .windows import DEFAULT_MAX_WINDOWS, cut_texts, worst_windows

HEAD_PATH = Path(__file__).parent / "data" / "embedding_head.safetensors"
ADAPTER_PATH = Path(__file__).parent / "data" / "encoder_lora.safetensors"
DEFAULT_ENCODER = "all-minilm-l6-v2"


class Encoder:
    """This backend's encoder: batch size, truncation (short messages: 128 tokens) and its LoRA deltas.

    The default MiniLM gets the shipped harm deltas (`ADAPTER_PATH`, trained by scripts/train_harm_adapter.py):
    a private merged copy, so other plugins' MiniLM is unchanged. `adapter=None` uses the plain encoder. `name`
    identifies the exact weights (base + delta digest): bank embeddings and heads are keyed by it.

    `int8`: None follows `guardrails.models.devices.encoder_int8` (opt-in `RAILGUARD_CPU_INT8=1`: int8 calibrated
    on `int8_calibration_texts`, see `guardrails.models.quantize`); the shipped heads and bank embeddings are fit
    in fp32 (`build` passes False) and serve both.
    Batches of 32: on 2 CPU cores 1.1x the throughput of 64 (less padding within a length-sorted batch).
    """

    def __init__(self, name: str = DEFAULT_ENCODER, *, adapter: Path | str | None | Literal["default"] = "default",
                 batch_size: int = 32, max_length: int = 128, int8: bool | None = None) -> None:
        if adapter == "default":
            adapter = ADAPTER_PATH if name == DEFAULT_ENCODER and ADAPTER_PATH.is_file() else None
        self.base_name, self.adapter = name, (Path(adapter) if adapter is not None else None)
        self.name = name
        if self.adapter is not None:
            from guardrails.models.lora import file_digest

            if not self.adapter.is_file():
                raise ConfigError(f"encoder adapter not found: {self.adapter}")
            self.name = f"{name}+lora-{file_digest(self.adapter)[:12]}"
        self.batch_size, self.max_length, self._int8 = batch_size, max_length, int8
        self._enc: Any = None

    def _load(self) -> Any:
        if self._enc is None:
            from guardrails.models import load_encoder, resolve_device
            from guardrails.models.devices import encoder_int8

            device = resolve_device(None)
            int8 = encoder_int8(device) if self._int8 is None else self._int8
            self._enc = load_encoder(self.base_name, device=device, adapter=self.adapter,
                                     int8_calibration=int8_calibration_texts() if int8 else None)
        return self._enc

    @property
    def int8(self) -> bool:
        """Whether this encoder runs dynamic int8 Linear layers (see `guardrails.models.quantize`)."""
        return bool(self._load().int8)

    @property
    def autocast_bf16(self) -> bool:
        """Whether this encoder runs under bf16 autocast (see `guardrails.models.devices.encoder_autocast_bf16`)."""
        return bool(self._load().autocast_bf16)

    @property
    def dim(self) -> int:
        return int(self._load().model.config.hidden_size)

    @property
    def tokenizer(self) -> Any:
        """The encoder's tokenizer (windows of long messages are cut in its tokens)."""
        return self._load().tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized embeddings in input order (the shared encoder batches by length)."""
        return np.asarray(self._load().encode(list(texts), batch_size=self.batch_size, max_length=self.max_length),
                          dtype=np.float32)

    def encode_with_plain(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(these embeddings, the plain base encoder's) for the same texts. With top-layer deltas the lower
        layers run once for both (`LoadedEncoder.encode_with_base`); without an adapter both are the same."""
        if self.adapter is None:
            E = self.encode(texts)
            return E, E
        own, plain = self._load().encode_with_base(list(texts), batch_size=self.batch_size,
                                                   max_length=self.max_length)
        return np.asarray(own, dtype=np.float32), np.asarray(plain, dtype=np.float32)


INT8_CALIBRATION_SIZE = 256


def int8_calibration_texts() -> list[str]:
    """What int8 encoders calibrate their input scales on: the shipped bank's first 256 texts by id (train split
    only, spam / toxic / negative / benign mixed; the same list on every machine, so the same int8 weights)."""
    bank = ExampleBank.load()
    order = sorted(range(len(bank.ids)), key=lambda i: bank.ids[i])
    return [bank.texts[i] for i in order[:INT8_CALIBRATION_SIZE]]


def text_key(text: str) -> str:
    """A user text's key in the embedding caches: its digest (`guardrails.decision.text_hash`: keyed under
    RAILGUARD_HASH_KEY when set), so the caches hold no user text and a guessed text cannot be confirmed by them."""
    return text_hash(text)


class CompiledCategory(NamedTuple):
    """A user category ready to score: its prototype model and the base concept it inherits (or None)."""

    proto: PrototypeCategory
    concept: str | None


def compiled_form(name: str, cat: Category) -> Category | None:
    """What of a category is fit as a prototype: a user category as it is; a base category (scored by its head)
    only for the examples a user extended it with, as a narrow copy; None for a base category without any."""
    if name not in BASE_CATEGORIES:
        return cat
    return cat.model_copy(update={"definition": "", "generalize": "examples"}) if cat.examples else None


class EmbeddingBackend:
    """Scores texts against a whole profile: base heads + prototype categories, compiled per profile content."""

    name = "embedding"

    def __init__(self, encoder: str = DEFAULT_ENCODER, *, head_path: Path | str = HEAD_PATH,
                 bank: ExampleBank | None = None, target_fpr: float = 0.01, cache_size: int = 256,
                 adapter: Path | str | None | Literal["default"] = "default", int8: bool | None = None,
                 max_windows: int = DEFAULT_MAX_WINDOWS) -> None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or not 1 <= max_windows <= 10_000:
            raise ConfigError(f"max_windows must be an integer in [1, 10000], got {max_windows!r}")
        self.max_windows = max_windows  # windows read per text (`personalization.windows`)
        # texts one turn is scored as (`plugin.turn_texts`): the cost is the turn's tokens, however many texts they
        # come in, and a toxic message among a few dozen others is read alone, not diluted in a joined text
        self.max_turn_texts = 64
        self.encoder = Encoder(encoder, adapter=adapter, int8=int8)  # base heads and concept detection
        # User categories live in the plain encoder's space: the harm deltas pull texts together by sentiment and
        # style, which is what the heads need but blurs topics ("crypto spam" matched "only horror movies").
        self.topic_encoder = (Encoder(encoder, adapter=None, int8=int8) if self.encoder.adapter is not None
                              else self.encoder)
        self.head_path, self.target_fpr, self.cache_size = Path(head_path), target_fpr, cache_size
        self._bank = bank
        self._heads: BaseHeads | None = None
        self._compiled: OrderedDict[str, CompiledCategory] = OrderedDict()
        self._anchor_split: tuple[np.ndarray, np.ndarray] | None = None
        # per-text embeddings of users' examples, counter-examples and definitions, per space: a profile's categories
        # are compiled from one batched encode per space instead of a few small ones per category. Keyed by the
        # text's sha256 (`text_key`), never the text: a category removed before its user's erasure left its
        # examples in memory until evicted (review of session 33); now only their hashes and embeddings stay.
        self._texts: dict[str, OrderedDict[str, np.ndarray]] = {"topic": OrderedDict(), "head": OrderedDict()}
        self.text_cache_size = 8192
        self.counter_sim = 0.9  # cosine above which a text counts as a near-duplicate of a counter-example
        self.concept_proto_fpr = 0.002  # prototype FPR of a category that inherits a base concept (see module doc)
        self._lock = threading.Lock()

    @property
    def bank(self) -> ExampleBank:
        if self._bank is None:
            self._bank = ExampleBank.load()
        return self._bank

    def forget_users(self) -> int:
        """An erasure (`HarmDetector.forget_user`): drop everything these caches derived from users' texts, every
        compiled category and every cached embedding of an example, counter-example or definition, whoever wrote
        it. Not just the erased user's current profile: the caches are keyed by content, so a category the user
        edited or removed before the erasure (or settings deleted first) left its older forms behind (review of
        session 34). Other users' categories are compiled again on their next check (one batched encode, the same
        scores); the base heads, bank and anchors hold no user text and stay. Returns how many entries went."""
        with self._lock:
            n = len(self._compiled) + sum(len(cache) for cache in self._texts.values())
            self._compiled.clear()
            for cache in self._texts.values():
                cache.clear()
        return n

    @property
    def heads(self) -> BaseHeads:
        if self._heads is None:
            if not self.head_path.exists():
                raise ConfigError(f"embedding head not found at {self.head_path}; run personalization.build")
            heads = BaseHeads.load(self.head_path)
            if heads.encoder_name_ and heads.encoder_name_ != self.encoder.name:
                raise ConfigError(f"embedding head {self.head_path.name} was fit on encoder {heads.encoder_name_!r}, "
                                  f"this backend uses {self.encoder.name!r}; rebuild it (personalization.build)")
            self._heads = heads
        return self._heads

    def _anchors(self) -> tuple[np.ndarray, np.ndarray]:
        """Benign bank embeddings split in two: anchors (negatives) and a disjoint calibration set. Computed once
        and shared (read-only) by every compiled category."""
        if self._anchor_split is None:
            E = self.bank.embeddings(self.topic_encoder)
            idx = np.flatnonzero(np.asarray(self.bank.labels) == "benign")
            anchors, cal = E[idx[0::2]], E[idx[1::2]]
            anchors.setflags(write=False)
            cal.setflags(write=False)
            self._anchor_split = (anchors, cal)
        return self._anchor_split

    def _embed_texts(self, texts: list[str], space: Literal["topic", "head"]) -> np.ndarray:
        """Embeddings of user-written texts, encoding only the ones not cached, in one batched call."""
        cache, enc = self._texts[space], (self.topic_encoder if space == "topic" else self.encoder)
        keys = {t: text_key(t) for t in texts}
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if keys[t] not in cache))
        if missing:
            E = enc.encode(missing)
            with self._lock:
                for t, e in zip(missing, E, strict=True):
                    cache[keys[t]] = e
                while len(cache) > self.text_cache_size:
                    cache.popitem(last=False)
        with self._lock:
            got = {t: cache[keys[t]] for t in texts if keys[t] in cache}
        rest = [t for t in texts if t not in got]  # evicted meanwhile by another thread: encode directly
        if rest:
            got.update(zip(rest, enc.encode(rest), strict=True))
        return np.stack([got[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    def _category_key(self, cat: Category) -> str:
        return text_hash(cat.model_dump_json())  # keyed like `text_key`: the JSON holds the examples

    def prepare(self, profile: ModerationProfile) -> None:
        """Encode every not-yet-compiled category's texts of `profile` in one batch per space (a profile's first
        check would otherwise run a few small encodes per category)."""
        with self._lock:
            forms = (compiled_form(n, c) for n, c in profile.categories.items())
            todo = [c for c in forms if c is not None and self._category_key(c) not in self._compiled]
        topic = [t for c in todo for t in (*c.examples, *c.counter_examples, *([c.definition] if c.definition else []))]
        head = [t for c in todo if c.generalize == "auto" for t in c.examples]
        if topic:
            self._embed_texts(topic, "topic")
        if head:
            self._embed_texts(head, "head")

    def _compile(self, cat: Category) -> CompiledCategory:
        key = self._category_key(cat)
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
        anchors, cal = self._anchors()
        texts = list(cat.examples) + list(cat.counter_examples) + ([cat.definition] if cat.definition else [])
        E = self._embed_texts(texts, "topic") if texts else np.zeros((0, anchors.shape[1]), np.float32)
        n_ex, n_cx = len(cat.examples), len(cat.counter_examples)
        concept = self._concept_of(cat) if cat.generalize == "auto" else None
        proto = PrototypeCategory(target_fpr=self.target_fpr if concept is None else self.concept_proto_fpr).fit(
            E[:n_ex], anchors, cal, definition=E[n_ex + n_cx] if cat.definition else None,
            counter=E[n_ex : n_ex + n_cx])
        compiled = CompiledCategory(proto, concept)
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def _concept_of(self, cat: Category) -> str | None:
        """The base concept whose head flags *every* example, if any (the most confident one).

        Inheriting widens the category a lot (one spam example → all spam), so all examples must agree, the
        inherited scores use the head's strict (2 % domain-balanced benign FPR) operating point, and a user who wants it
        narrow sets generalize="examples" or adds counter-examples. Definitions alone never trigger it. Callers
        whose "example" is a topic label rather than a message (the chat-command router: "stop showing me crypto
        spam" → example "crypto spam") pass generalize="examples": the negative head flags "crypto spam", and
        inheriting it would block every strongly negative message.
        """
        if not cat.examples:
            return None
        p = self.heads.predict_proba(self._embed_texts(list(cat.examples), "head"), list(cat.examples))
        ok = (p >= 0.5).all(0)
        if not ok.any():
            return None
        return self.heads.classes_[int(np.argmax(np.where(ok, p.mean(0), -1.0)))]

    def concept_of(self, cat: Category) -> str | None:
        """Which base concept a user category inherits (None: examples only). For explanations and tests."""
        return self._compile(cat).concept

    def _embed_list(self, texts: list[str]) -> np.ndarray:
        return self._embed_texts(list(texts), "topic")

    @staticmethod
    def needs_topic_space(profile: ModerationProfile) -> bool:
        """Whether scoring `profile` needs the plain-encoder embeddings (any user text in it)."""
        return any(name not in BASE_CATEGORIES or c.examples or c.counter_examples
                   for name, c in profile.categories.items())

    def score_embeddings(self, E: np.ndarray, texts: list[str], profile: ModerationProfile,
                         E_topic: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Calibrated probability per category (0.5 = the category's calibrated operating point).

        `E`: head-space embeddings (`encoder`); `E_topic`: plain-space ones (`topic_encoder`), computed here
        when the profile has user texts and they were not passed. A default profile costs one encoder pass.
        """
        heads = self.heads
        if E_topic is None:
            E_topic = E if self.topic_encoder is self.encoder else None
        if E_topic is None and self.needs_topic_space(profile):
            E_topic = self.topic_encoder.encode(texts)
        Et = E_topic if E_topic is not None else E  # only read when the profile has user texts
        base = heads.predict_proba(E, texts)
        self.prepare(profile)
        strict: np.ndarray | None = None
        out: dict[str, np.ndarray] = {}
        for name, cat in profile.categories.items():
            if name in BASE_CATEGORIES:
                s = base[:, heads.classes_.index(name)]
                own = compiled_form(name, cat)
                if own is not None:  # the user extended a base category with their own examples
                    s = np.maximum(s, self._compile(own).proto.predict_proba(Et))
            else:
                comp = self._compile(cat)
                s = comp.proto.predict_proba(Et)
                if comp.concept is not None:
                    strict = heads.strict_proba(E, texts) if strict is None else strict
                    s = np.maximum(s, strict[:, heads.classes_.index(comp.concept)])
            if cat.counter_examples:  # a near-duplicate of a counter-example is not this category
                C = self._embed_list(cat.counter_examples)
                cap = 0.25 if cat.threshold is None else min(0.25, cat.threshold / 2)  # below a stricter threshold too
                s = np.where((Et @ C.T).max(1) >= self.counter_sim, np.minimum(s, cap), s)
            out[name] = s
        return out

    def score(self, texts: list[str], profile: ModerationProfile) -> dict[str, np.ndarray]:
        """Calibrated probability per category and text; a text longer than the encoder's window is read as
        half-overlapping windows and scores its worst one (`personalization.windows`)."""
        return self.score_read(texts, profile)[0]

    def score_read(self, texts: list[str], profile: ModerationProfile, *, total_windows: int | None = None
                   ) -> tuple[dict[str, np.ndarray], list[int]]:
        """(`score`, per text the characters no window read: 0 unless the text is longer than `max_windows`
        windows, about 8,000 characters by default). `total_windows`: at most this many extra windows over all
        the texts (a turn of 16 long messages read 16 x 64 windows: ~50 s on 2 cores), shared out by
        `windows.cut_texts`; each text keeps its first window."""
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("texts must be a list of strings")
        for i, t in enumerate(texts):  # an unpaired surrogate ("\ud800", valid in JSON) broke the tokenizer
            try:
                coerce_text(t, allow_empty=True)
            except InvalidInputError as exc:
                raise InvalidInputError(f"texts[{i}]: {exc}") from None
        if not texts:
            return {name: np.zeros(0, np.float32) for name in profile.categories}, []
        tok = self.encoder.tokenizer
        width = self.encoder.max_length - tok.num_special_tokens_to_add(pair=False)
        cut = cut_texts(tok, texts, width, self.max_windows, total_windows)
        scores = self._score_pieces([w for c in cut for w in c.texts], profile)
        return worst_windows(scores, [len(c.texts) for c in cut]), [c.unread_chars for c in cut]

    def _score_pieces(self, texts: list[str], profile: ModerationProfile) -> dict[str, np.ndarray]:
        if self.topic_encoder is not self.encoder and self.needs_topic_space(profile):
            E, E_topic = self.encode_both(texts)
            return self.score_embeddings(E, texts, profile, E_topic=E_topic)
        return self.score_embeddings(self.encoder.encode(texts), texts, profile)

    def encode_both(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(head-space, topic-space) embeddings. The topic encoder is the adapted one's plain base, so deltas
        that adapt only the top layers share the lower ones (one trunk pass); full-depth deltas cost two passes."""
        return self.encoder.encode_with_plain(texts)  # no adapter: one pass, topic_encoder is encoder
