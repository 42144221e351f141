"""Search QA: questions about a generated world that can only be answered by searching.

The world (fixed by `world_seed`) has people, companies and cities with random
fictional names and random attributes; the corpus has one passage per entity:

    Kalo Veni: born in Tarsuvo, works for Dremix.
    Dremix: a company in Plonta, founded 1987.
    Plonta: a city in Vesk.

Questions are single-hop ("Where was Kalo Veni born?") or two-hop ("Where is the
company Kalo Veni works for based?": search the person, read the company, search the
company). A fifth of the people, companies and cities are held out: test questions
are about them only, so a model cannot answer them from memory of training questions;
it must search. Answers are random names and years, so guessing almost never works.

Cold-start traces show the format with real search results (the `search` tool with
SEARCH_KWARGS over this corpus):

    <search>Kalo Veni</search><result>Kalo Veni was born in ...</result><answer>Tarsuvo</answer>
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from grpokit.tasks.base import TASKS
from grpokit.types import Example, SFTExample

# The search tool settings the traces, the demo and the recipe use.
SEARCH_KWARGS = {"corpus": "task:search_qa", "k": 1, "show_title": False, "max_chars": 200}
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass
class Entity:
    kind: str  # person | company | city
    name: str
    attrs: dict
    heldout: bool = False


@dataclass
class World:
    people: list[Entity]
    companies: list[Entity]
    cities: list[Entity]
    countries: list[str]

    def by_name(self) -> dict[str, Entity]:
        return {e.name: e for e in self.people + self.companies + self.cities}


def _word(rng: random.Random, syllables: int) -> str:
    s = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
    if rng.random() < 0.5:
        s += rng.choice(_CONSONANTS)
    return s.capitalize()


def passage(e: Entity) -> str:
    a = e.attrs
    if e.kind == "person":
        return f"{e.name}: born in {a['born']}, works for {a['company']}."
    if e.kind == "company":
        return f"{e.name}: a company in {a['city']}, founded {a['founded']}."
    return f"{e.name}: a city in {a['country']}."


# (question template, hops, answer path): the path names the attribute at each hop
QUESTIONS = {
    "person": [
        ("Where was {} born?", ("born",)),
        ("Which company does {} work for?", ("company",)),
        ("Where is the company {} works for based?", ("company", "city")),
        ("When was the company {} works for founded?", ("company", "founded")),
        ("Which country was {} born in?", ("born", "country")),
    ],
    "company": [
        ("Where is {} based?", ("city",)),
        ("When was {} founded?", ("founded",)),
        ("Which country is {} based in?", ("city", "country")),
    ],
    "city": [
        ("Which country is {} in?", ("country",)),
    ],
}


@TASKS.register("search_qa", doc="questions about a generated world, answerable only with the search tool")
@dataclass
class SearchQATask:
    name: str = "search_qa"
    world_seed: int = 0
    n_people: int = 400
    n_companies: int = 80
    n_cities: int = 40
    n_countries: int = 12
    heldout_fraction: float = 0.2

    @property
    def default_rewards(self) -> list[tuple[str, float]]:
        return [("exact_match", 1.0), ("search_format", 0.1)]

    # -- the world ---------------------------------------------------------------------
    @cached_property
    def world(self) -> World:
        rng = random.Random(self.world_seed)
        used: set[str] = set()

        def fresh(syllables: tuple[int, int]) -> str:
            while True:
                w = _word(rng, rng.randint(*syllables))
                if w not in used and len(w) >= 3:
                    used.add(w)
                    return w

        countries = [fresh((2, 2)) for _ in range(self.n_countries)]
        cities = [Entity("city", fresh((2, 2)), {"country": rng.choice(countries)}) for _ in range(self.n_cities)]
        companies = [Entity("company", fresh((2, 2)), {"city": rng.choice(cities).name,
                                                       "founded": str(rng.randint(1850, 2020))})
                     for _ in range(self.n_companies)]
        people = [Entity("person", f"{fresh((2, 2))} {fresh((2, 2))}",
                         {"born": rng.choice(cities).name, "company": rng.choice(companies).name})
                  for _ in range(self.n_people)]
        for group in (people, companies, cities):
            k = max(1, round(len(group) * self.heldout_fraction))
            for e in rng.sample(group, k):
                e.heldout = True
        return World(people, companies, cities, countries)

    def corpus(self) -> list[dict]:
        """One passage per entity: {id, title, text}."""
        w = self.world
        return [{"id": f"{e.kind}-{i}", "title": e.name, "text": passage(e)}
                for group in (w.people, w.companies, w.cities) for i, e in enumerate(group)]

    def _answer_path(self, e: Entity, path: tuple[str, ...]) -> tuple[str, list[str]]:
        """(answer, the entity names searched at each hop)."""
        names = self.world.by_name()
        countries = {c.name: c.attrs["country"] for c in self.world.cities}
        queries, cur = [e.name], e
        value = ""
        for k, attr in enumerate(path):
            value = cur.attrs[attr] if attr in cur.attrs else countries[cur.name]
            if k + 1 < len(path):
                cur = names[value]
                queries.append(cur.name)
        return value, queries

    def questions(self, split: str) -> list[Example]:
        """Every question of a split, single- and two-hop interleaved in a fixed order."""
        if split not in ("train", "test"):
            raise ValueError(f"search_qa task has splits 'train' and 'test', not {split!r}")
        heldout = split == "test"
        w = self.world
        by_hops: dict[int, list[dict]] = {1: [], 2: []}
        for e in w.people + w.companies + w.cities:
            if e.heldout != heldout:
                continue
            for template, path in QUESTIONS[e.kind]:
                answer, queries = self._answer_path(e, path)
                by_hops[len(path)].append({"question": template.format(e.name), "answer": answer,
                                           "hops": len(path), "subject": e.name, "queries": queries})
        rng = random.Random(self.world_seed * 7919 + (1 if heldout else 2))
        for rows in by_hops.values():
            rng.shuffle(rows)
        mixed = [r for pair in zip(by_hops[1], by_hops[2]) for r in pair]
        k = min(len(by_hops[1]), len(by_hops[2]))
        mixed += by_hops[1][k:] + by_hops[2][k:]
        return [Example(id=i, prompt=r.pop("question"), fields=r) for i, r in enumerate(mixed)]

    def prompts(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """Questions of a split (test: a fixed order; train: shuffled by seed); first n."""
        rows = self.questions(split)
        if split == "train" and seed:
            random.Random(seed).shuffle(rows)
            rows = [Example(id=i, prompt=e.prompt, fields=e.fields) for i, e in enumerate(rows)]
        return rows[:n] if n else rows

    # -- cold start --------------------------------------------------------------------
    @cached_property
    def _search(self):
        from grpokit.tools.search import BM25Search

        return BM25Search(**{**SEARCH_KWARGS, "corpus": self.corpus()})

    def trace(self, example: Example) -> str:
        """The reference completion: search each hop's entity, read, answer."""
        parts = [f"<search>{q}</search><result>{self._search(q)}</result>" for q in example.fields["queries"]]
        return "".join(parts) + f"<answer>{example.fields['answer']}</answer>"

    def traces(self, n: int | None = None, seed: int = 0) -> list[SFTExample]:
        """n cold-start traces (None: one per training question), a seeded choice of
        training questions (never held-out entities)."""
        rows = self.questions("train")
        random.Random(seed + 1).shuffle(rows)
        rows = rows[:n] if n else rows
        return [SFTExample(prompt=e.prompt, completion=self.trace(e)) for e in rows]
