"""Task type inference: explicit rules whose every firing is reported. Pure.

A task without a type gets one from rules a person can read and audit: keywords and
phrases per type, code fences and code-looking lines, and the kinds of the files in its
context. Each rule that fires adds to its type's score; the highest score wins, and the
winning type's strongest rule is reported. When the top scores tie (or nothing fires),
no type is chosen here: the caller may ask an optional classifier model and then calls
`resolve_tie()`, which accepts the classifier's answer only if it is one of the tied
types, else falls back to the configured default type. An LLM alone never decides.

Routing runs on every request, on the event loop, so the rules must cost the same for a
hostile prompt as for a polite one: they read only the head and the tail of a prompt
(`SCAN_HEAD_CHARS` + `SCAN_TAIL_CHARS`: what a prompt asks for is said at its start or
its end, the middle is material), every pattern is linear (line-start patterns skip only
spaces and tabs, never newlines, so blank lines cannot make them quadratic), and a
keyword is looked for with a substring test before its word-boundary pattern runs.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "planning": (
        "plan",
        "planning",
        "roadmap",
        "milestone",
        "milestones",
        "break down",
        "steps to",
        "strategy",
        "prioritize",
        "prioritise",
        "estimate",
        "timeline",
        "phases",
    ),
    "design": (
        "design",
        "architecture",
        "architect",
        "schema",
        "interface",
        "data model",
        "diagram",
        "api design",
        "component",
        "trade-off",
        "tradeoffs",
    ),
    "audit": (
        "audit",
        "security",
        "vulnerability",
        "vulnerabilities",
        "cve",
        "compliance",
        "threat model",
        "license check",
        "secrets",
        "injection",
        "pentest",
    ),
    "review": (
        "review",
        "critique",
        "feedback",
        "code review",
        "pull request",
        "look over",
        "proofread",
        "second opinion",
    ),
    "implementation": (
        "implement",
        "write a function",
        "write code",
        "write a script",
        "fix the bug",
        "bug fix",
        "refactor",
        "unit test",
        "add a test",
        "traceback",
        "stack trace",
        "compile error",
        "function",
        "class",
        "method",
        "fizzbuzz",
    ),
    "infra": (
        "deploy",
        "deployment",
        "docker",
        "dockerfile",
        "kubernetes",
        "k8s",
        "terraform",
        "ansible",
        "nginx",
        "systemd",
        "helm",
        "ci pipeline",
        "dns",
        "firewall",
        "backup",
        "server",
        "cluster",
        "vpn",
    ),
    "email": (
        "email",
        "e-mail",
        "reply to",
        "inbox",
        "newsletter",
        "draft a message",
        "subject line",
        "cover letter",
        "mail",
    ),
    "admin": (
        "schedule",
        "calendar",
        "meeting",
        "invoice",
        "expense",
        "expenses",
        "timesheet",
        "booking",
        "reminder",
        "paperwork",
        "spreadsheet",
        "tax",
    ),
}

FILE_KINDS: dict[str, str] = {
    **dict.fromkeys(
        (
            ".py",
            ".ts",
            ".tsx",
            ".js",
            ".jsx",
            ".go",
            ".rs",
            ".java",
            ".kt",
            ".c",
            ".h",
            ".cc",
            ".cpp",
            ".hpp",
            ".cs",
            ".rb",
            ".swift",
            ".php",
            ".scala",
            ".lua",
        ),
        "implementation",
    ),
    **dict.fromkeys((".tf", ".hcl", ".service", ".nomad"), "infra"),
    **dict.fromkeys((".eml", ".msg", ".mbox"), "email"),
}
INFRA_FILE_NAMES = frozenset(
    {
        "dockerfile",
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
        "nginx.conf",
        "ansible.cfg",
        "playbook.yml",
        "values.yaml",
        "chart.yaml",
    }
)

KEYWORD_WEIGHT = 1.0
USER_RULE_WEIGHT = 2.0
"""A phrase of the owner's `rules` is strong evidence on its own (`STRONG_RULE_SCORE`)."""
CODE_WEIGHT = 1.0
FILE_WEIGHT = 2.0
STRONG_RULE_SCORE = 2.0
"""A rule decides before the classifier only on strong evidence: a file of the type's
kind in the context, or two pieces of evidence for one type (two keywords, a keyword and
code). One is weak: "plan" in "the plan is to add a --dry-run flag" says little about
what is wanted, and neither does code alone ("thoughts on this diff?" wants a review)."""

SCAN_HEAD_CHARS = 12_288
SCAN_TAIL_CHARS = 4_096

# `[ \t]*`, not `\s*`: under MULTILINE `^\s*` at each of n blank lines runs over all the
# blank lines after it, which is quadratic in n (48 KB of newlines took 22 s).
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^[ \t]*(def |class |import |from \w+ import |function |const |let |fn |func |#include|"
    r"public (static )?\w+|return\b[^\n]*;$)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class InferenceRules:
    keywords: Mapping[str, Sequence[str]] = field(default_factory=lambda: DEFAULT_KEYWORDS)
    file_kinds: Mapping[str, str] = field(default_factory=lambda: FILE_KINDS)
    user_rules: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """The owner's phrases per type, each strong enough to decide (`USER_RULE_WEIGHT`)."""

    @classmethod
    def with_extra(
        cls,
        extra: Mapping[str, Sequence[str]],
        user_rules: Mapping[str, Sequence[str]] | None = None,
    ) -> InferenceRules:
        """The defaults plus keywords from config (new types may bring their own), and
        the config's own deciding rules."""
        merged = {t: tuple(words) for t, words in DEFAULT_KEYWORDS.items()}
        for task_type, words in extra.items():
            merged[task_type] = (*merged.get(task_type, ()), *words)
        return cls(keywords=merged, user_rules=dict(user_rules or {}))


@dataclass(frozen=True)
class Inference:
    type: str | None
    rule: str
    """Why: the strongest rule of the winning type, or why there is no winner."""
    scores: Mapping[str, float]
    tied: tuple[str, ...] = ()


@dataclass
class _Score:
    total: float = 0.0
    best_rule: str = ""
    best_weight: float = 0.0

    def add(self, weight: float, rule: str) -> None:
        self.total += weight
        if weight > self.best_weight:
            self.best_weight, self.best_rule = weight, rule


def _file_kind(path: str, rules: InferenceRules) -> str | None:
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.name.lower() in INFRA_FILE_NAMES:
        return "infra"
    return rules.file_kinds.get(pure.suffix.lower())


def scanned_part(prompt: str) -> str:
    """What the rules read of a prompt: all of it when short, else its head and tail."""
    if len(prompt) <= SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        return prompt
    return prompt[:SCAN_HEAD_CHARS] + "\n" + prompt[-SCAN_TAIL_CHARS:]


@functools.lru_cache(maxsize=4096)
def _keyword_pattern(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")


def infer_type(prompt: str, context_files: Sequence[str], rules: InferenceRules) -> Inference:
    scores: dict[str, _Score] = {}
    prompt = scanned_part(prompt)
    lowered = prompt.lower()
    for task_type, phrases in rules.user_rules.items():
        for phrase in phrases:
            key = phrase.lower()
            if key in lowered and _keyword_pattern(key).search(lowered):
                scores.setdefault(task_type, _Score()).add(
                    USER_RULE_WEIGHT, f"your rule '{phrase}' → {task_type}"
                )
    for task_type, words in rules.keywords.items():
        for word in words:
            key = word.lower()
            if key in lowered and _keyword_pattern(key).search(lowered):
                scores.setdefault(task_type, _Score()).add(
                    KEYWORD_WEIGHT, f"keyword '{word}' → {task_type}"
                )
    if _FENCE.search(prompt):
        scores.setdefault("implementation", _Score()).add(
            CODE_WEIGHT, "code fence in the prompt → implementation"
        )
    elif _CODE_LINE.search(prompt):
        scores.setdefault("implementation", _Score()).add(
            CODE_WEIGHT, "code-looking line in the prompt → implementation"
        )
    for path in context_files:
        kind = _file_kind(path, rules)
        if kind is not None:
            scores.setdefault(kind, _Score()).add(
                FILE_WEIGHT, f"file kind of {PurePosixPath(path).name} in the context → {kind}"
            )

    totals = {t: s.total for t, s in scores.items()}
    if not totals:
        return Inference(None, "no rule fired", {}, tuple(rules.keywords))
    top = max(totals.values())
    leaders = tuple(sorted(t for t, v in totals.items() if v == top))
    if len(leaders) > 1:
        return Inference(None, f"rules tie between {', '.join(leaders)}", totals, leaders)
    winner = leaders[0]
    return Inference(winner, scores[winner].best_rule, totals)


def _answer(text: str | None) -> str:
    """A model's answer as a type name: trimmed, lowercased, without a closing period."""
    return (text or "").strip().lower().strip(".")


def resolve_tie(
    inference: Inference, classifier_answer: str | None, default_type: str
) -> Inference:
    """Settle what the rules left open: the classifier model's answer if it names one of
    the candidates (`Inference.tied`: the tied types, or every type when nothing fired),
    else the default."""
    if inference.type is not None:
        return inference
    answer = _answer(classifier_answer)
    if answer in inference.tied:
        rule = f"{inference.rule}; the classifier model chose {answer}"
        return Inference(answer, rule, inference.scores, inference.tied)
    asked = f"; the classifier model answered {classifier_answer!r}" if classifier_answer else ""
    rule = f"{inference.rule}{asked}; default type {default_type}"
    return Inference(default_type, rule, inference.scores, inference.tied)


OVERRULE_CONFIDENCE = 0.5
"""How sure the classifier must be to overrule a weak rule (a keyword that fired): more
than where nothing fired, since the rule is evidence too ("Plan it." is planning, though
the word alone leans elsewhere in the corpus)."""


@dataclass(frozen=True)
class Classification:
    """What the statistical classifier says of a prompt (see `host.models.type_classifier`)."""

    type: str
    confidence: float
    """The probability it gives its type, 0 to 1."""
    evidence: tuple[str, ...] = ()
    """The words that weighed most for that type, strongest first."""
    ranking: tuple[tuple[str, float], ...] = ()
    """The likeliest types with their probabilities, its own first (for `--explain`)."""

    def reason(self) -> str:
        words = ", ".join(f"'{w}'" for w in self.evidence)
        return f"classifier: {self.type} {self.confidence:.2f}" + (f" — {words}" if words else "")


class Classifier(Protocol):
    """A deterministic function of the text: the same prompt always gets the same answer,
    so a decision that asks it is still a pure function of its snapshot."""

    def classify(self, text: str) -> Classification | None: ...


def decided_by_rule(inference: Inference) -> bool:
    """Whether the rules alone decide: a winner on strong evidence (then the classifier
    need not be asked at all)."""
    rule_type = inference.type
    return rule_type is not None and inference.scores.get(rule_type, 0.0) >= STRONG_RULE_SCORE


RULE = "rule"
CLASSIFIER = "classifier"
WEAK_RULE = "weak rule"
CLASSIFIER_MODEL = "classifier model"
DEFAULT = "default"
"""The steps that can decide an inferred type, in the order `choose_type` tries them."""


@dataclass(frozen=True)
class TypeChoice:
    """An inferred type, why, and which step decided it."""

    type: str
    reason: str
    decided_by: str
    """`RULE`, `CLASSIFIER`, `WEAK_RULE`, `CLASSIFIER_MODEL` or `DEFAULT`."""
    needed: float | None = None
    """How sure the classifier had to be at its step (None: it was not consulted)."""

    @property
    def unsure(self) -> bool:
        """Nothing was sure enough: the default type stands (a classifier model may help)."""
        return self.decided_by == DEFAULT


def choose_type(
    inference: Inference,
    classification: Classification | None,
    threshold: float,
    classifier_answer: str | None,
    default_type: str,
) -> TypeChoice:
    """The type of untyped work, and why, in this order:

    1. a rule on strong evidence (`STRONG_RULE_SCORE`; the owner's own rules are);
    2. the classifier, when it is at least `threshold` sure (`OVERRULE_CONFIDENCE` to
       overrule a weak rule) and can name the words that weighed for its type (without
       any, its confidence is the shape of the letters: "go on" is not infra work);
    3. a rule on weak evidence (one keyword);
    4. the classifier model's answer, if it names a candidate (a tied type, or any when
       nothing fired); the shell asks it only when this would otherwise be step 5;
    5. `default_type`, saying that nothing was sure.
    """
    rule_type = inference.type
    if rule_type is not None and decided_by_rule(inference):
        return TypeChoice(rule_type, inference.rule, RULE)
    needed = threshold if rule_type is None else max(threshold, OVERRULE_CONFIDENCE)
    sure = classification is not None and classification.confidence >= needed
    if classification is not None and sure and classification.evidence:
        if rule_type is None:
            why = classification.reason()
        elif rule_type == classification.type:
            why = f"{classification.reason()}; {inference.rule} agrees"
        else:
            why = f"{classification.reason()}; over the weaker {inference.rule}"
        return TypeChoice(classification.type, why, CLASSIFIER, needed)
    consulted = needed if classification is not None else None
    unsure = ""
    if classification is not None and classification.confidence < needed:
        unsure = f"; {classification.reason()} is under the threshold {needed:.2f}"
    elif classification is not None:
        unsure = f"; {classification.reason()} names no telling word for it"
    if rule_type is not None:
        return TypeChoice(rule_type, inference.rule + unsure, WEAK_RULE, consulted)
    if classifier_answer:
        with_unsure = dataclasses.replace(inference, rule=inference.rule + unsure)
        settled = resolve_tie(with_unsure, classifier_answer, default_type)
        step = CLASSIFIER_MODEL if _answer(classifier_answer) in inference.tied else DEFAULT
        return TypeChoice(str(settled.type), settled.rule, step, consulted)
    return TypeChoice(
        default_type,
        f"{inference.rule}{unsure}; nothing was sure: default type {default_type}",
        DEFAULT,
        consulted,
    )
