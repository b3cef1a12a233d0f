"""The statistical task-type classifier: TF-IDF over words and character n-grams, and a
logistic regression, fitted from the labelled corpus in `host/data/task_corpus/` (one
JSONL file per type) plus the config's own `examples`.

Keyword rules miss most everyday wording ("Add a --dry-run flag to the sync command"
names no type), so the router asks this between its strong rules and the default type
(`host.core.task_types.choose_type`). It is explicit and auditable all the same: its
reason names the type, its probability and the words that weighed most for it.

Fitting takes a few seconds, so a fitted classifier is kept in the user's cache
(`~/.cache/tierhost/classifier/`, or `$XDG_CACHE_HOME`), keyed by a fingerprint of the
corpus, the extra examples and the library's version; a daemon fits once per corpus and
machine. A classifier sent to the offload worker travels as its cache path, not as its
arrays: the worker loads it once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from host.core.task_types import Classification

log = logging.getLogger("tierhost.classifier")

FORMAT = 1
"""Bumped when the features or the model change, so an old cache is never read."""

CLASSIFY_CHARS = 4_096
"""What a prompt's type is read from: its head, where what is wanted is said."""

EVIDENCE_WORDS = 3
RANKED_TYPES = 3
"""How many of the likeliest types a classification lists with their probabilities."""
MAX_EXAMPLE_CHARS = 2_000


def corpus_files() -> dict[str, str]:
    """The shipped corpus: task type → its JSONL text."""
    folder = resources.files("host") / "data" / "task_corpus"
    return {
        entry.name.removesuffix(".jsonl"): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".jsonl")
    }


def read_corpus(files: Mapping[str, str]) -> list[tuple[str, str]]:
    """(prompt, type) pairs; a line that is not an object with a `prompt` string is an
    error naming the file and line (the corpus is ours, and must be right)."""
    examples = []
    for task_type, text in files.items():
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            item = json.loads(line)
            prompt = item.get("prompt") if isinstance(item, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"task_corpus/{task_type}.jsonl:{number}: no prompt")
            examples.append((prompt, task_type))
    return examples


def all_examples(extra: Mapping[str, Sequence[str]] | None = None) -> list[tuple[str, str]]:
    examples = read_corpus(corpus_files())
    for task_type, prompts in (extra or {}).items():
        examples += [(p[:MAX_EXAMPLE_CHARS], task_type) for p in prompts if p.strip()]
    return examples


def fingerprint(examples: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{sklearn.__version__}\0".encode())
    for prompt, task_type in examples:
        digest.update(f"{task_type}\0{prompt}\0".encode())
    return digest.hexdigest()[:24]


def _pipeline() -> Pipeline:
    words = TfidfVectorizer(
        analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True
    )
    shapes = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2, lowercase=True
    )
    return Pipeline(
        [
            ("features", FeatureUnion([("words", words), ("chars", shapes)])),
            ("model", LogisticRegression(C=20.0, max_iter=3000)),
        ]
    )


class TypeClassifier:
    """A fitted classifier; `classify()` is a deterministic function of the text."""

    def __init__(self, pipeline: Pipeline, key: str, path: Path | None) -> None:
        self._pipeline = pipeline
        self.key = key
        self.path = path
        features: FeatureUnion = pipeline.named_steps["features"]
        words: TfidfVectorizer = dict(features.transformer_list)["words"]
        self._word_names = words.get_feature_names_out()
        self._word_count = len(self._word_names)
        self._telling = [
            not set(str(name).split()) <= ENGLISH_STOP_WORDS for name in self._word_names
        ]
        """Features worth naming as evidence: not made of stop words alone ("to", "this")."""
        self._model: LogisticRegression = pipeline.named_steps["model"]
        self.types: tuple[str, ...] = tuple(str(c) for c in self._model.classes_)
        self._memo = functools.lru_cache(maxsize=1024)(self._classify)

    def classify(self, text: str) -> Classification | None:
        text = text[:CLASSIFY_CHARS]
        return self._memo(text) if text.strip() else None

    def _classify(self, text: str) -> Classification:
        features = self._pipeline.named_steps["features"].transform([text])
        probabilities = self._model.predict_proba(features)[0]
        best = int(np.argmax(probabilities))
        row = features.tocsr()[0]
        weights = self._model.coef_[best] if len(self.types) > 2 else self._model.coef_[0]
        contributions = [
            (float(value * weights[index]), str(self._word_names[index]))
            for index, value in zip(row.indices, row.data, strict=True)
            if index < self._word_count and self._telling[index]
        ]
        contributions.sort(reverse=True)
        evidence = tuple(word for weight, word in contributions[:EVIDENCE_WORDS] if weight > 0)
        order = np.argsort(-probabilities, kind="stable")[:RANKED_TYPES]
        ranking = tuple((self.types[int(i)], float(probabilities[int(i)])) for i in order)
        return Classification(self.types[best], float(probabilities[best]), evidence, ranking)

    def __reduce__(self) -> tuple[Any, ...]:
        """To another process as the cache path it can load, when there is one."""
        if self.path is None:
            return (TypeClassifier, (self._pipeline, self.key, None))
        return (load_cached, (str(self.path), self.key))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tierhost" / "classifier"


def fit(examples: Sequence[tuple[str, str]]) -> Pipeline:
    pipeline = _pipeline()
    pipeline.fit([p[:CLASSIFY_CHARS] for p, _ in examples], [t for _, t in examples])
    return pipeline


@functools.lru_cache(maxsize=4)
def load_cached(path: str, key: str) -> TypeClassifier:
    """One load per process and cache file (the offload worker's copy)."""
    with open(path, "rb") as file:
        pipeline = pickle.load(file)  # our own cache file, written by `load_or_fit`
    return TypeClassifier(pipeline, key, Path(path))


def load_or_fit(
    extra: Mapping[str, Sequence[str]] | None = None, directory: Path | None = None
) -> TypeClassifier:
    """The classifier for this corpus: from the cache, else fitted and cached. A cache
    that cannot be read or written is logged and the classifier fitted in memory."""
    examples = all_examples(extra)
    key = fingerprint(examples)
    folder = directory or cache_dir()
    path = folder / f"{key}.pickle"
    if path.exists():
        try:
            return load_cached(str(path), key)
        except Exception as exc:
            log.warning("the cached classifier %s cannot be read (%s); fitting again", path, exc)
    pipeline = fit(examples)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as file:
            pickle.dump(pipeline, file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(file.name, path)
    except OSError as exc:
        log.warning("could not cache the classifier in %s: %s", folder, exc)
        return TypeClassifier(pipeline, key, None)
    return TypeClassifier(pipeline, key, path)
