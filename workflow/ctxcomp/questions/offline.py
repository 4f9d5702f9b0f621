"""Deterministic heuristic question writer: the tiny preset and the tests get a valid question set with no network.

The questions are plausible rather than good: simple surface heuristics pick an exact span of the context for each
dimension (the opening sentence's longest content-word run for main_topic, capitalised spans for entity_list, -ed
verbs for predicate_exactness, prepositional objects for relation_anchor, the name before a pronoun for coreference,
the words before a verb for role_binding, numbers and -ly/-al/-ous words for modifier_scope), with fallbacks so that
any context with words yields a full set. The randomness is seeded by the context id, so the same input always gives
the same questions. The result is serialised as a model reply and goes through the same parsing and validation.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from .schema import DIMENSIONS, UNANSWERABLE
from .settings import QuestionSettings

_WORD = re.compile(r"\w+(?:['’\-]\w+)*")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)
_STOP = frozenset("""
a an the and or but nor so yet if then than that this these those there here of in on at by for with from to into
onto about above below over under after before during since until while as is are was were be been being am do does
did done has have had having will would shall should can could may might must not no yes it its it's he she they
them his her hers their theirs we us our you your i me my mine who whom whose which what when where why how all any
each every both either neither some such more most other another same own only also just very too again further
once one two three also up down out off per via
""".split())
_IRREGULAR_PAST = frozenset("""
became began brought built bought caught came chose drew drove fell felt found gave grew held kept knew led left
lost made meant met paid ran rose said sang sent showed sold spoke spent stood took taught told thought threw won
wrote
""".split())
_NOT_VERBS = frozenset(
    "speed need seed bed feed indeed hundred breed red bred shed weed steed greed creed sled".split())
_AUXILIARIES = frozenset("is are was were be been being has have had".split())
_PRONOUNS = frozenset("he she it they him her them his its their this these".split())
_PREPOSITIONS = frozenset("of in at on for with from by into about during after before near between".split())
_MODIFIER_SUFFIXES = ("ly", "al", "ous", "ive", "ful", "ic", "able", "less", "est")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

_UNANSWERABLE = (
    "What was the total budget allocated to {t}?",
    "In which year was {e} first mentioned in an official government report?",
    "Who wrote the original proposal concerning {t}?",
    "How many people attended the first public event about {t}?",
    "Which award did {e} receive in 1987?",
    "What did a follow-up study on {t} conclude ten years later?",
    "What is the name of the person who funded work on {t}?",
    "Which language was {t} first documented in?",
    "What was the population of the town where {e} was founded?",
    "Which newspaper first reported on {e}?",
    "What colour was the logo associated with {e}?",
    "How long did the negotiations about {t} last?",
)


@dataclass(frozen=True)
class _Tok:
    text: str
    start: int
    end: int
    sent: int
    first: bool  # first word of its sentence

    @property
    def low(self) -> str:
        return self.text.lower().replace("’", "'")

    @property
    def content(self) -> bool:
        low = self.low
        if "'" in low and (low.endswith("n't") or low.split("'")[0] in _STOP):
            return False  # contractions of function words: they'll, hasn't, it's
        return low not in _STOP and len(self.text) >= 3 and not self.text.isdigit()

    @property
    def verb(self) -> bool:
        """Past-tense verbs (or participles): the only verbs surface rules can spot reliably."""
        low = self.low
        if self.capital or low in _NOT_VERBS:
            return False
        return low in _IRREGULAR_PAST or (low.endswith("ed") and len(low) >= 5)

    @property
    def capital(self) -> bool:
        return self.text[:1].isupper()


class _Passage:
    def __init__(self, context: str):
        self.context = context
        self.toks: list[_Tok] = []
        self.sent_starts: list[int] = []
        for si, m in enumerate(_SENTENCE.finditer(context)):
            self.sent_starts.append(len(self.toks))
            for j, w in enumerate(_WORD.finditer(context, m.start(), m.end())):
                self.toks.append(_Tok(w.group(0), w.start(), w.end(), si, j == 0))

    def span(self, i: int, j: int) -> str:
        """Tokens i..j-1 exactly as they appear in the context (so the answer is a substring by construction)."""
        return self.context[self.toks[i].start:self.toks[j - 1].end]

    def words(self, i: int, j: int, anchor: int | None = None) -> str:
        """Tokens i..j-1 joined by spaces, for quoting in a question; only those in the anchor token's sentence."""
        toks = self.toks[max(i, 0):max(j, 0)]
        if anchor is not None:
            toks = [t for t in toks if t.sent == self.toks[anchor].sent]
        return " ".join(t.text for t in toks)

    def adjacent(self, i: int) -> bool:
        """Tokens i and i+1 are separated by whitespace only (no comma, no sentence break)."""
        return (i + 1 < len(self.toks) and self.toks[i + 1].sent == self.toks[i].sent
                and not self.context[self.toks[i].end:self.toks[i + 1].start].strip())

    def sentence_opening(self, sent: int, n: int = 5) -> str:
        i = self.sent_starts[sent]
        j = i
        while j < len(self.toks) and self.toks[j].sent == sent and j - i < n:
            j += 1
        return self.words(i, j)

    def runs(self, pred: Callable[[_Tok], bool], max_len: int = 4) -> list[tuple[int, int]]:
        """Maximal runs of consecutive tokens (within one sentence) that satisfy pred, capped at max_len."""
        out, i = [], 0
        while i < len(self.toks):
            if not pred(self.toks[i]):
                i += 1
                continue
            j = i + 1
            while j < len(self.toks) and j - i < max_len and pred(self.toks[j]) and self.adjacent(j - 1):
                j += 1
            out.append((i, j))
            i = j
        return out


Candidate = tuple[str, str]  # (question, answer)


def _main_topic(p: _Passage) -> list[Candidate]:
    runs = [r for r in p.runs(lambda t: t.content) if p.toks[r[0]].sent <= 1]
    runs.sort(key=lambda r: (p.toks[r[0]].sent, -(r[1] - r[0]), r[0]))
    asks = ("What is the passage mainly about?", "What subject does the opening of the passage introduce?",
            "What central topic does the passage's first sentence name?", "What is the focus of the second sentence?")
    return [(asks[k] if k < len(asks) else f"What topic follows \"{p.words(a - 2, a, a)}\" in the passage?",
             p.span(a, b)) for k, (a, b) in enumerate(runs)]


def _names(p: _Passage) -> list[tuple[int, int]]:
    """Runs of capitalised words, less lone words capitalised only because they open a sentence."""
    return [(a, b) for a, b in p.runs(lambda t: t.capital and t.content) if not (b - a == 1 and p.toks[a].first)]


def _entities(p: _Passage) -> list[Candidate]:
    out, per_sent = [], {}
    numbers = [(i, i + 1) for i, t in enumerate(p.toks) if t.text[:1].isdigit()]
    for a, b in sorted(_names(p) + numbers):
        s = p.toks[a].sent
        k = per_sent.get(s, 0)
        per_sent[s] = k + 1
        nth = _ORDINALS[k] if k < len(_ORDINALS) else f"{k + 1}th"
        out.append((f"What is the {nth} name or number in the sentence beginning \"{p.sentence_opening(s)}\"?",
                    p.span(a, b)))
    return out


def _predicates(p: _Passage) -> list[Candidate]:
    return [(f"Which exact verb comes after \"{p.words(i - 3, i, i)}\" in the passage?", p.span(i, i + 1))
            for i, t in enumerate(p.toks) if t.verb and p.words(i - 3, i, i)]


def _relations(p: _Passage) -> list[Candidate]:
    out = []
    for i, t in enumerate(p.toks[:-1]):
        if t.low in _PREPOSITIONS and i >= 1 and p.toks[i + 1].sent == t.sent:
            j = i + 1
            while j < len(p.toks) and j - i <= 3 and p.toks[j].sent == t.sent and not p.toks[j].content:
                j += 1
            if j < len(p.toks) and p.toks[j].sent == t.sent and p.toks[j].content:
                out.append((f"According to the passage, \"{p.words(i - 2, i + 1, i)}\" what?", p.span(i + 1, j + 1)))
    return out


def _coreferences(p: _Passage) -> list[Candidate]:
    out = []
    names = _names(p)
    for i, t in enumerate(p.toks):
        if t.low not in _PRONOUNS:
            continue
        before = [(a, b) for a, b in names if b <= i]
        if before:
            a, b = before[-1]
            out.append((f"In \"{p.words(i, i + 4, i)}\", who or what does \"{t.text}\" refer to?", p.span(a, b)))
    return out


def _roles(p: _Passage) -> list[Candidate]:
    out = []
    for i, t in enumerate(p.toks):
        if not t.verb:
            continue
        b = i  # skip auxiliaries and adverbs back to the subject's last word: "the board has finally approved"
        while b > 0 and p.toks[b - 1].sent == t.sent and i - b < 3 and (not p.toks[b - 1].content
                                                                      or p.toks[b - 1].low.endswith("ly")):
            b -= 1
        if b == 0 or p.toks[b - 1].sent != t.sent or not p.toks[b - 1].content or p.toks[b - 1].verb:
            continue
        a = b - 1
        while a > 0 and b - a < 3 and p.adjacent(a - 1) and p.toks[a - 1].content and not p.toks[a - 1].verb:
            a -= 1
        start = i - 1 if p.toks[i - 1].low in _AUXILIARIES else i
        out.append((f"Who or what {p.words(start, i + 4, i)}, according to the passage?", p.span(a, b)))
    return out


def _modifiers(p: _Passage) -> list[Candidate]:
    out = []
    for i, t in enumerate(p.toks[:-1]):
        nxt = p.toks[i + 1]
        if not p.adjacent(i) or not nxt.content:
            continue
        if t.text[:1].isdigit():
            out.append((f"What number qualifies \"{nxt.text}\" in the passage?", p.span(i, i + 1)))
        elif t.content and not t.capital and t.low.endswith(_MODIFIER_SUFFIXES) and len(t.text) >= 5:
            out.append((f"Which word modifies \"{p.words(i + 1, i + 3, i)}\" in the passage?", p.span(i, i + 1)))
    return out


def _fallback(p: _Passage) -> list[Candidate]:
    idx = [i for i, t in enumerate(p.toks) if t.content] or list(range(len(p.toks)))
    def ask(i: int) -> str:
        if p.words(i - 3, i, i):
            return f"Which word follows \"{p.words(i - 3, i, i)}\" in the passage?"
        if p.words(i + 1, i + 4, i):
            return f"Which word opens the sentence that continues \"{p.words(i + 1, i + 4, i)}\"?"
        if i == 0:
            return "Which word opens the passage?"
        return f"Which word stands alone as sentence {p.toks[i].sent + 1}?"

    return [(ask(i), p.span(i, i + 1)) for i in idx]


_GENERATORS: dict[str, Callable[[_Passage], list[Candidate]]] = {
    "main_topic": _main_topic,
    "entity_list": _entities,
    "predicate_exactness": _predicates,
    "relation_anchor": _relations,
    "coreference": _coreferences,
    "role_binding": _roles,
    "modifier_scope": _modifiers,
}


def offline_questions(context_id: str, context: str, s: QuestionSettings) -> list[dict]:
    """{dimension, question, answer} items in the reply layout; fewer than asked only for a context with no words."""
    rng = random.Random(int(hashlib.sha256(context_id.encode("utf-8")).hexdigest()[:16], 16))
    p = _Passage(context)
    if not p.toks:
        return []
    fallback = _fallback(p)
    rng.shuffle(fallback)
    pools = {}
    for dim, gen in _GENERATORS.items():
        cands = gen(p)
        head, tail = cands[:1], cands[1:]
        rng.shuffle(tail)  # keep the best candidate first, vary the rest by context id
        pools[dim] = head + tail
    seen: set[str] = set()
    items: list[dict] = []

    def take(dim: str, pool: list[Candidate]) -> bool:
        while pool:
            q, a = pool.pop(0)
            if q.lower() not in seen:
                seen.add(q.lower())
                items.append({"dimension": dim, "question": q, "answer": a})
                return True
        return False

    for k in range(s.n_answerable):
        dim = DIMENSIONS[k % len(DIMENSIONS)]
        if not (take(dim, pools[dim]) or take(dim, fallback)):
            q, a = f"Which word appears in the passage (item {k + 1})?", p.span(0, 1)
            seen.add(q.lower())
            items.append({"dimension": dim, "question": q, "answer": a})

    topic = next((it["answer"] for it in items if it["dimension"] == "main_topic"), p.words(0, 3))
    entity = next((it["answer"] for it in items if it["dimension"] == "entity_list"), topic)
    templates = list(_UNANSWERABLE)
    rng.shuffle(templates)
    for k in range(s.unanswerable_per_context):
        q = templates[k % len(templates)].format(t=" ".join(topic.split()), e=" ".join(entity.split()))
        if k >= len(templates):
            q = q[:-1] + f" (variant {k // len(templates) + 1})?"
        items.append({"dimension": UNANSWERABLE, "question": q, "answer": None})
    return items


def offline_reply(context_id: str, context: str, s: QuestionSettings) -> str:
    """The offline questions as the JSON text a model would send."""
    return json.dumps({"questions": offline_questions(context_id, context, s)}, ensure_ascii=False)
