"""Embedding backend (all-MiniLM-L6-v2): base-category heads plus per-user prototype categories.

Why this design:
- Base categories (toxic, spam, negative) get a logistic-regression head on sentence embeddings, trained only
  on the shared train files (minus our dev split) and stored as JSON (never pickle), so loading it can't run code.
- User categories have 1-50 examples: too few to train anything. Each is scored by a nearest-prototype margin:
  similarity to the category's examples (and definition) minus similarity to benign anchors and the user's
  counter-examples. That works from one example and needs no retraining when the user edits the profile.
- One example pins a topic, not a style (1-shot prototype recall on held-out toxic/spam/negative text: 0.25).
  An LLM generalises from the example because it already knows the concept; the analogue here is concept
  transfer: when a base head flags every user example, the user category also scores that head at its strict
  (≤ 1 % benign FPR) operating point (`Category.generalize`, default "auto").
- Scores are comparable across categories and users because every category is calibrated the same way: its
  threshold is the (1 - target_fpr) quantile of its raw score on held-out benign text, and a logistic map puts
  that operating point at 0.5. A user threshold in [0, 1] then means the same thing for every category.
- User texts are only ever embedded: a hostile definition is a vector like any other and cannot alter the base
  heads or other categories' scores.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from guardrails.errors import ConfigError, InvalidInputError

from .bank import ExampleBank
from .profile import BASE_CATEGORIES, Category, ModerationProfile

HEAD_PATH = Path(__file__).parent / "data" / "embedding_head.safetensors"
ADAPTER_PATH = Path(__file__).parent / "data" / "encoder_lora.safetensors"
DEFAULT_ENCODER = "all-minilm-l6-v2"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class Encoder:
    """This backend's encoder: batch size, truncation (short messages: 128 tokens) and its LoRA deltas.

    The default MiniLM gets the shipped harm deltas (`ADAPTER_PATH`, trained by scripts/train_harm_adapter.py):
    a private merged copy, so other plugins' MiniLM is unchanged. `adapter=None` uses the plain encoder. `name`
    identifies the exact weights (base + delta digest): bank embeddings and heads are keyed by it.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, *, adapter: Path | str | None | Literal["default"] = "default",
                 batch_size: int = 64, max_length: int = 128) -> None:
        if adapter == "default":
            adapter = ADAPTER_PATH if name == DEFAULT_ENCODER and ADAPTER_PATH.is_file() else None
        self.base_name, self.adapter = name, (Path(adapter) if adapter is not None else None)
        self.name = name
        if self.adapter is not None:
            from guardrails.models.lora import file_digest

            if not self.adapter.is_file():
                raise ConfigError(f"encoder adapter not found: {self.adapter}")
            self.name = f"{name}+lora-{file_digest(self.adapter)[:12]}"
        self.batch_size, self.max_length = batch_size, max_length
        self._enc: Any = None

    def _load(self) -> Any:
        if self._enc is None:
            from guardrails.models import load_encoder

            self._enc = load_encoder(self.base_name, adapter=self.adapter)
        return self._enc

    @property
    def dim(self) -> int:
        return int(self._load().model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized embeddings in input order (the shared encoder batches by length)."""
        return np.asarray(self._load().encode(list(texts), batch_size=self.batch_size, max_length=self.max_length),
                          dtype=np.float32)


def calibrate(raw_benign: np.ndarray, target_fpr: float) -> tuple[float, float]:
    """Operating point at `target_fpr` on benign raw scores, and a logistic scale mapping median benign → 0.1."""
    if raw_benign.size == 0:
        raise ConfigError("calibration needs benign texts")
    t = float(np.quantile(raw_benign, 1.0 - target_fpr))
    spread = t - float(np.median(raw_benign))
    return t, max(spread / np.log(9.0), 1e-3)


def lexical(texts: list[str]) -> Any:
    """Stateless hashed character n-grams (2-5, word-bounded): spam/abuse cues (£, 'txt', l33t) that a
    sentence encoder smooths away. Hashing keeps it vocabulary-free, so the head stores only weights."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=LEX_FEATURES,
                           alternate_sign=False, norm="l2", lowercase=True)
    return hv.transform(texts)


LEX_FEATURES = 2**17


class BaseHeads:
    """One-vs-benign logistic heads for the base taxonomy on [embedding ‖ hashed char n-grams].

    sklearn protocol over (E, texts); thresholds chosen on a separate calibration split (max F1 there, or a
    target benign FPR), then mapped so that the operating point is probability 0.5.
    """

    def __init__(self, C: float = 16.0, use_lexical: bool = True, calibration: str = "f1",
                 target_fpr: float = 0.05, other_task_weight: dict[str, float] | None = None,
                 strict_fpr: float = 0.01) -> None:
        self.C, self.use_lexical, self.calibration, self.target_fpr = C, use_lexical, calibration, target_fpr
        # Only spam benefits: the toxic and negative heads *need* other corpora's benign rows (SMS ham that
        # sounds sad or rude), and down-weighting them raised multi-label FPR on the SMS dev file 0.054 -> 0.080.
        self.other_task_weight = {"spam": 0.3} if other_task_weight is None else dict(other_task_weight)
        self.strict_fpr = strict_fpr
        self.encoder_name_ = ""  # the encoder the head was fit on (checked at load by EmbeddingBackend)

    def _X(self, E: np.ndarray, texts: list[str]) -> Any:
        if not self.use_lexical:
            return E
        import scipy.sparse as sp

        return sp.hstack([sp.csr_matrix(E), lexical(texts)]).tocsr()

    def fit(self, E: np.ndarray, texts: list[str], y: list[str], E_cal: np.ndarray, texts_cal: list[str],
            y_cal: list[str], tasks: list[str] | None = None) -> BaseHeads:
        """Fit each head on train rows (its category vs benign); calibrate on held-out cal rows.

        With `tasks`, benign rows from other tasks' corpora weigh `other_task_weight[c]`: a spam head trained
        against tweets and film reviews as much as against ordinary SMS learns "not a tweet" instead of "not
        ham" (dev spam F1 0.928 with equal weights vs 0.957 at 0.3, in an offline sweep on the SMS split).
        """
        from sklearn.linear_model import LogisticRegression

        ya, yc = np.asarray(y), np.asarray(y_cal)
        ta = np.asarray(tasks) if tasks is not None else None
        X = self._X(E, texts)
        self.classes_ = sorted(BASE_CATEGORIES)
        self.coef_ = np.zeros((len(self.classes_), X.shape[1]), dtype=np.float32)
        self.intercept_ = np.zeros(len(self.classes_), dtype=np.float32)
        self.threshold_, self.scale_ = np.zeros(len(self.classes_)), np.ones(len(self.classes_))
        self.cal_fpr_ = np.zeros(len(self.classes_))
        self.strict_threshold_ = np.zeros(len(self.classes_))
        for i, c in enumerate(self.classes_):
            m = (ya == c) | (ya == "benign")
            w = np.ones(int(m.sum()))
            if ta is not None:
                own = {str(t) for t in ta[ya == c]}
                w[~np.isin(ta[m], list(own))] = self.other_task_weight.get(c, 1.0)
            lr = LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced", solver="liblinear")
            lr.fit(X[m], ya[m] == c, sample_weight=w)
            self.coef_[i], self.intercept_[i] = lr.coef_[0], lr.intercept_[0]
        raw = self.decision_function(E_cal, texts_cal, calibrated=False)
        for i, c in enumerate(self.classes_):
            neg = raw[yc == "benign", i]
            self.strict_threshold_[i] = calibrate(neg, self.strict_fpr)[0]
            t, self.scale_[i] = calibrate(neg, self.target_fpr)
            if self.calibration == "f1":
                m = (yc == c) | (yc == "benign")
                r, pos = raw[m, i], np.asarray(yc[m] == c)
                cands = np.quantile(r, np.linspace(0.01, 0.99, 197))
                f1 = [2.0 * int(np.count_nonzero(pos & (r >= x)))
                      / max(int(np.count_nonzero(pos)) + int(np.count_nonzero(r >= x)), 1) for x in cands]
                t = float(cands[int(np.argmax(f1))])
                self.scale_[i] = max((t - float(np.median(neg))) / np.log(9.0), 1e-3)
            self.threshold_[i], self.cal_fpr_[i] = t, float((neg >= t).mean())
            # Never looser than the main operating point (the F1 point can already be stricter than 1 % FPR).
            self.strict_threshold_[i] = max(self.strict_threshold_[i], t)
        return self

    def decision_function(self, E: np.ndarray, texts: list[str], *, calibrated: bool = True) -> np.ndarray:
        raw = np.asarray(self._X(E, texts) @ self.coef_.T).reshape(len(E), -1) + self.intercept_
        return (raw - self.threshold_) / self.scale_ if calibrated else raw

    def predict_proba(self, E: np.ndarray, texts: list[str]) -> np.ndarray:
        return _sigmoid(self.decision_function(E, texts))

    def strict_proba(self, E: np.ndarray, texts: list[str]) -> np.ndarray:
        """Like predict_proba but 0.5 sits at the strict operating point (`strict_fpr` of held-out benign)."""
        raw = self.decision_function(E, texts, calibrated=False)
        return _sigmoid((raw - self.strict_threshold_) / self.scale_)

    def predict(self, E: np.ndarray, texts: list[str]) -> np.ndarray:
        return self.predict_proba(E, texts) >= 0.5

    def save(self, path: Path, encoder_name: str = "") -> None:
        from safetensors.numpy import save_file

        meta = {"classes": self.classes_, "encoder": encoder_name, "intercept": self.intercept_.tolist(), "C": self.C,
                "threshold": self.threshold_.tolist(), "scale": self.scale_.tolist(),
                "cal_fpr": self.cal_fpr_.tolist(), "use_lexical": self.use_lexical,
                "calibration": self.calibration, "target_fpr": self.target_fpr, "lex_features": LEX_FEATURES,
                "other_task_weight": self.other_task_weight, "strict_fpr": self.strict_fpr,
                "strict_threshold": self.strict_threshold_.tolist()}
        d = self.coef_.shape[1] - (LEX_FEATURES if self.use_lexical else 0)
        tensors = {"coef_emb": self.coef_[:, :d].astype(np.float32)}
        if self.use_lexical:
            tensors["coef_lex"] = self.coef_[:, d:].astype(np.float16)
        save_file(tensors, str(path), metadata={"head": json.dumps(meta)})

    @classmethod
    def load(cls, path: Path) -> BaseHeads:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {})["head"])
            parts = [f.get_tensor("coef_emb").astype(np.float32)]
            if meta["use_lexical"]:
                parts.append(f.get_tensor("coef_lex").astype(np.float32))
        h = cls(C=meta["C"], use_lexical=meta["use_lexical"], calibration=meta["calibration"],
                target_fpr=meta["target_fpr"], other_task_weight=meta.get("other_task_weight", {}),
                strict_fpr=meta.get("strict_fpr", meta["target_fpr"]))
        h.classes_ = list(meta["classes"])
        h.coef_ = np.concatenate(parts, axis=1)
        h.intercept_ = np.asarray(meta["intercept"], dtype=np.float32)
        h.threshold_, h.scale_ = np.asarray(meta["threshold"]), np.asarray(meta["scale"])
        h.cal_fpr_ = np.asarray(meta["cal_fpr"])
        h.encoder_name_ = str(meta.get("encoder", ""))
        h.strict_threshold_ = np.asarray(meta.get("strict_threshold", meta["threshold"]))
        return h


class PrototypeCategory:
    """A user category scored by a nearest-prototype margin against benign anchors (works from 1 example)."""

    def __init__(self, target_fpr: float = 0.01, definition_weight: float = 0.9, k_neg: int = 3) -> None:
        self.target_fpr, self.definition_weight, self.k_neg = target_fpr, definition_weight, k_neg

    def fit(self, P: np.ndarray, N: np.ndarray, E_cal: np.ndarray, definition: np.ndarray | None = None
            ) -> PrototypeCategory:
        """P: example embeddings, N: anchors + counter-examples, E_cal: held-out benign for calibration."""
        if P.shape[0] == 0 and definition is None:
            raise InvalidInputError("a category needs at least one example or a definition")
        self.pos_ = P
        self.def_ = definition
        self.neg_ = N
        self.threshold_, self.scale_ = calibrate(self._raw(E_cal), self.target_fpr)
        return self

    def _raw(self, E: np.ndarray) -> np.ndarray:
        pos = np.full(E.shape[0], -1.0, dtype=np.float32)
        if self.pos_.shape[0]:
            pos = (E @ self.pos_.T).max(1)
        if self.def_ is not None:  # definitions are short and abstract: they count a little less than examples
            pos = np.maximum(pos, self.definition_weight * (E @ self.def_))
        sims = E @ self.neg_.T
        k = min(self.k_neg, sims.shape[1])
        neg = np.sort(sims, axis=1)[:, -k:].mean(1) if k else np.zeros(E.shape[0])
        return pos - neg

    def decision_function(self, E: np.ndarray) -> np.ndarray:
        return (self._raw(E) - self.threshold_) / self.scale_

    def predict_proba(self, E: np.ndarray) -> np.ndarray:
        return _sigmoid(self.decision_function(E))

    def predict(self, E: np.ndarray) -> np.ndarray:
        return self.predict_proba(E) >= 0.5


class CompiledCategory(NamedTuple):
    """A user category ready to score: its prototype model and the base concept it inherits (or None)."""

    proto: PrototypeCategory
    concept: str | None


class EmbeddingBackend:
    """Scores texts against a whole profile: base heads + prototype categories, compiled per profile content."""

    name = "embedding"

    def __init__(self, encoder: str = DEFAULT_ENCODER, *, head_path: Path | str = HEAD_PATH,
                 bank: ExampleBank | None = None, target_fpr: float = 0.01, cache_size: int = 256,
                 adapter: Path | str | None | Literal["default"] = "default") -> None:
        self.encoder = Encoder(encoder, adapter=adapter)  # base heads and concept detection
        # User categories live in the plain encoder's space: the harm deltas pull texts together by sentiment and
        # style, which is what the heads need but blurs topics ("crypto spam" matched "only horror movies").
        self.topic_encoder = Encoder(encoder, adapter=None) if self.encoder.adapter is not None else self.encoder
        self.head_path, self.target_fpr, self.cache_size = Path(head_path), target_fpr, cache_size
        self._bank = bank
        self._heads: BaseHeads | None = None
        self._compiled: OrderedDict[str, CompiledCategory] = OrderedDict()
        self._lists: OrderedDict[str, np.ndarray] = OrderedDict()
        self.counter_sim = 0.9  # cosine above which a text counts as a near-duplicate of a counter-example
        self._lock = threading.Lock()

    @property
    def bank(self) -> ExampleBank:
        if self._bank is None:
            self._bank = ExampleBank.load()
        return self._bank

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
        """Benign bank embeddings split in two: anchors (negatives) and a disjoint calibration set."""
        E = self.bank.embeddings(self.topic_encoder)
        idx = np.flatnonzero(np.asarray(self.bank.labels) == "benign")
        return E[idx[0::2]], E[idx[1::2]]

    def _compile(self, cat: Category) -> CompiledCategory:
        key = hashlib.sha256(cat.model_dump_json().encode()).hexdigest()
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
        anchors, cal = self._anchors()
        texts = list(cat.examples) + list(cat.counter_examples) + ([cat.definition] if cat.definition else [])
        E = self.topic_encoder.encode(texts) if texts else np.zeros((0, anchors.shape[1]), np.float32)
        n_ex, n_cx = len(cat.examples), len(cat.counter_examples)
        proto = PrototypeCategory(target_fpr=self.target_fpr).fit(
            E[:n_ex], np.concatenate([anchors, E[n_ex : n_ex + n_cx]]), cal,
            definition=E[n_ex + n_cx] if cat.definition else None)
        concept = self._concept_of(cat) if cat.generalize == "auto" else None
        compiled = CompiledCategory(proto, concept)
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def _concept_of(self, cat: Category) -> str | None:
        """The base concept whose head flags *every* example, if any (the most confident one).

        Inheriting widens the category a lot (one spam example → all spam), so all examples must agree, the
        inherited scores use the head's strict (≤ 1 % benign FPR) operating point, and a user who wants it
        narrow sets generalize="examples" or adds counter-examples. Definitions alone never trigger it. Callers
        whose "example" is a topic label rather than a message (the chat-command router: "stop showing me crypto
        spam" → example "crypto spam") pass generalize="examples": the negative head flags "crypto spam", and
        inheriting it would block every strongly negative message.
        """
        if not cat.examples:
            return None
        p = self.heads.predict_proba(self.encoder.encode(list(cat.examples)), list(cat.examples))
        ok = (p >= 0.5).all(0)
        if not ok.any():
            return None
        return self.heads.classes_[int(np.argmax(np.where(ok, p.mean(0), -1.0)))]

    def concept_of(self, cat: Category) -> str | None:
        """Which base concept a user category inherits (None: examples only). For explanations and tests."""
        return self._compile(cat).concept

    def _embed_list(self, texts: list[str]) -> np.ndarray:
        key = "list:" + hashlib.sha256("\n\x00".join(texts).encode()).hexdigest()
        with self._lock:
            if key in self._lists:
                return self._lists[key]
        E = self.topic_encoder.encode(list(texts))
        with self._lock:
            self._lists[key] = E
            while len(self._lists) > self.cache_size:
                self._lists.popitem(last=False)
        return E

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
        strict: np.ndarray | None = None
        out: dict[str, np.ndarray] = {}
        for name, cat in profile.categories.items():
            if name in BASE_CATEGORIES:
                s = base[:, heads.classes_.index(name)]
                if cat.examples:  # the user extended a base category with their own examples
                    own = cat.model_copy(update={"definition": "", "generalize": "examples"})
                    s = np.maximum(s, self._compile(own).proto.predict_proba(Et))
            else:
                comp = self._compile(cat)
                s = comp.proto.predict_proba(Et)
                if comp.concept is not None:
                    strict = heads.strict_proba(E, texts) if strict is None else strict
                    s = np.maximum(s, strict[:, heads.classes_.index(comp.concept)])
            if cat.counter_examples:  # a near-duplicate of a counter-example is not this category
                C = self._embed_list(cat.counter_examples)
                s = np.where((Et @ C.T).max(1) >= self.counter_sim, np.minimum(s, 0.25), s)
            out[name] = s
        return out

    def score(self, texts: list[str], profile: ModerationProfile) -> dict[str, np.ndarray]:
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("texts must be a list of strings")
        return self.score_embeddings(self.encoder.encode(texts), texts, profile)
