"""The request stream of ``deerflow bench cache``: docs/WORKLOAD.md's repetition model, written as
DeerFlow-shaped research jobs (searches and crawls) whose every request carries a ground-truth
*intent*: what it asks, independent of its wording.

The model (docs/WORKLOAD.md, "Repetition"):
- 30 % of jobs are one of 14 canned starter questions; the rest pick a topic from a Zipf(1.1)
  catalogue.
- A job on a topic seen before repeats the previous job's plan word for word with p 0.3;
  otherwise, with p 0.5, it asks the same questions in other words (another sentence pattern,
  synonyms for the aspect and the sector, filler words that are not stop words); otherwise it
  is a new plan on the topic.
- Within a plan, a query is a near-duplicate of an earlier one with p 0.16 (a filler added or
  dropped, lower case, another pattern), or a templated sibling (the same words about another
  entity) with p 0.2; the realised pair shares (about 8 % and 10 %) are reported.
- 0-3 crawls per job; 40 % of crawled URLs repeat one crawled before.
- Intents mentioning "latest", "today", "news" or a year stay fresh 1 h, others 24 h.

Entities are written as proper nouns (capitalised), as DeerFlow's planner LLM writes them.
:func:`answer` models what the providers return, so that two wordings of one question share
most of their results and two questions share few."""

from __future__ import annotations

import json
import math
import random
import zlib
from dataclasses import dataclass, field, replace

_SECTORS: list[tuple[list[str], list[str]]] = [
    (["food delivery", "meal delivery", "takeaway delivery"],
     ["Meituan", "JD", "Ele.me", "DoorDash", "Uber Eats", "Deliveroo", "Swiggy", "Zomato"]),
    (["electric vehicles", "EV makers", "battery electric cars"],
     ["Tesla", "BYD", "NIO", "XPeng", "Rivian", "Lucid", "Volkswagen", "Li Auto"]),
    (["cloud computing", "cloud services", "cloud infrastructure"],
     ["AWS", "Azure", "Alibaba Cloud", "Google Cloud", "Oracle", "Tencent Cloud", "IBM", "OVH"]),
    (["smartphones", "mobile phones", "handsets"],
     ["Apple", "Samsung", "Xiaomi", "Oppo", "Vivo", "Huawei", "Honor", "Transsion"]),
    (["solar panels", "photovoltaic modules", "solar PV"],
     ["LONGi", "Jinko", "Trina", "First Solar", "Canadian Solar", "JA Solar", "Risen", "Tongwei"]),
    (["video streaming", "streaming services", "online video"],
     ["Netflix", "Disney", "iQiyi", "Tencent Video", "Youku", "HBO", "Bilibili", "Hulu"]),
    (["online education", "edtech", "e-learning"],
     ["Coursera", "Duolingo", "Udemy", "Byju", "TAL", "Chegg", "Youdao", "Khan Academy"]),
    (["semiconductors", "chip makers", "chipmaking"],
     ["TSMC", "Intel", "Samsung Foundry", "SMIC", "Nvidia", "AMD", "Micron", "GlobalFoundries"]),
    (["ride hailing", "ride sharing", "taxi apps"],
     ["Uber", "Lyft", "Didi", "Grab", "Ola", "Bolt", "Gojek", "Careem"]),
    (["e-commerce", "online retail", "online shopping"],
     ["Amazon", "Alibaba", "Pinduoduo", "Shopee", "Mercado Libre", "Temu", "Shein", "Flipkart"]),
    (["large language models", "LLM providers", "foundation models"],
     ["OpenAI", "Anthropic", "DeepSeek", "Moonshot", "Mistral", "Cohere", "Zhipu", "Baidu"]),
    (["coffee chains", "coffee shops", "cafe chains"],
     ["Starbucks", "Luckin", "Costa", "Tim Hortons", "Cotti", "Manner", "Blue Bottle", "Peet"]),
    (["airlines", "air carriers", "passenger aviation"],
     ["Delta", "Lufthansa", "Air China", "Emirates", "Ryanair", "IndiGo", "Qantas", "Cathay"]),
    (["payments", "digital payments", "mobile payments"],
     ["Alipay", "WeChat Pay", "PayPal", "Stripe", "Adyen", "Paytm", "Klarna", "Square"]),
    (["wind turbines", "wind power equipment", "wind energy"],
     ["Vestas", "Goldwind", "Siemens Gamesa", "Envision", "Mingyang", "Nordex", "Suzlon", "GE"]),
    (["biotech", "biotechnology firms", "drug developers"],
     ["Moderna", "BioNTech", "Amgen", "Regeneron", "BeiGene", "Vertex", "Biogen", "Gilead"]),
]  # fmt: skip
_REGIONS = ["China", "India", "Europe", "Japan", "Brazil", "Germany", "Indonesia", "Mexico",
            "Africa", "Korea", "Canada", "Australia"]  # fmt: skip
_ASPECTS: list[list[str]] = [
    ["market share", "share of the market", "portion of the market"],
    ["revenue", "sales", "turnover", "income"],
    ["growth rate", "rate of growth", "expansion pace"],
    ["pricing", "prices", "price levels", "cost to consumers"],
    ["competitors", "rivals", "competition", "competing firms"],
    ["regulation", "regulatory rules", "government policy"],
    ["user numbers", "number of users", "user base", "customer count"],
    ["profitability", "profit margins", "earnings margin"],
    ["investment", "funding", "capital raised"],
    ["strategy", "business strategy", "strategic plan"],
    ["risks", "challenges", "threats"],
    ["employees", "workforce", "headcount", "staff numbers"],
    ["supply chain", "suppliers", "supplier network"],
    ["technology", "tech stack", "technical capabilities"],
]
_MODS = ["", "", "", "", "", "", "latest", "news", "today", "2025", "2026"]
_FILLERS = ["", "", "", "please give an overview of ", "I'm researching ", "quick question: ",
            "help me understand ", "background on ", "what do we know about ",
            "an analysis of ", "key facts on ", "tell me about "]  # fmt: skip
_PATTERNS = [
    "{entity} {sector} {aspect} in {region}",
    "{aspect} of {entity} in the {region} {sector} market",
    "{region} {sector}: {entity} {aspect}",
    "what is the {aspect} of {entity} for {sector} in {region}",
    "{entity}'s {aspect}, {sector}, {region}",
]
_DOMAINS = ["reuters.com", "bloomberg.com", "ft.com", "36kr.com", "techcrunch.com",
            "statista.com", "scmp.com", "caixinglobal.com", "wsj.com", "nikkei.com"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Intent:
    """What a search asks, whatever the wording."""

    sector: int
    entity: int
    region: int
    aspect: int
    mod: str


@dataclass(frozen=True, slots=True)
class Wording:
    pattern: int
    aspect_syn: int
    sector_syn: int
    filler: str
    lower: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    intent: Intent
    wording: Wording

    def text(self) -> str:
        i, w = self.intent, self.wording
        sectors, entities = _SECTORS[i.sector]
        s = _PATTERNS[w.pattern].format(
            entity=entities[i.entity],
            sector=sectors[w.sector_syn % len(sectors)],
            aspect=_ASPECTS[i.aspect][w.aspect_syn % len(_ASPECTS[i.aspect])],
            region=_REGIONS[i.region],
        )
        if i.mod:
            s = f"latest {s}" if i.mod == "latest" and w.pattern % 2 else f"{s} {i.mod}"
        s = w.filler + s
        return s.lower() if w.lower else s

    def ttl_s(self) -> float:
        return 3600.0 if self.intent.mod else 86400.0


@dataclass(frozen=True, slots=True)
class Request:
    t: float
    job: str
    handler: str
    payload: bytes
    intent: object
    ttl_s: float
    text: str
    words: object = None
    """The synonyms chosen (aspect, sector): requests of one intent with equal ``words`` differ
    only in order, fillers and case, which a wording-based matcher can in principle see."""


@dataclass(slots=True)
class _Topic:
    sector: int
    region: int
    plan: list[Query] | None = None
    urls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StreamStats:
    jobs: int = 0
    requests: int = 0
    pairs: int = 0
    near_dup_pairs: int = 0
    sibling_pairs: int = 0
    identical_plans: int = 0
    paraphrased_plans: int = 0
    new_plans: int = 0


class Workload:
    """The request stream (deterministic for a seed)."""

    def __init__(self, seed: int, topics: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.topics = [
            _Topic(self.rng.randrange(len(_SECTORS)), self.rng.randrange(len(_REGIONS)))
            for _ in range(topics)
        ]
        self.starters = [_Topic(k % len(_SECTORS), (k * 5) % len(_REGIONS)) for k in range(14)]
        weights = [1.0 / (r + 1) ** 1.1 for r in range(topics)]
        total = sum(weights)
        self._cum: list[float] = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self._cum.append(acc)
        self.stats = StreamStats()
        self._all_urls: list[str] = []

    def _wording(self, pattern: int | None = None) -> Wording:
        r = self.rng
        return Wording(
            r.randrange(len(_PATTERNS)) if pattern is None else pattern,
            r.randrange(4),
            r.randrange(3),
            r.choice(_FILLERS),
        )

    def _intent(self, topic: _Topic) -> Intent:
        r = self.rng
        return Intent(topic.sector, r.randrange(8), topic.region, r.randrange(len(_ASPECTS)),
                      r.choice(_MODS))  # fmt: skip

    def _near_dup(self, q: Query) -> Query:
        r, w = self.rng, q.wording
        how = r.randrange(3)
        if how == 0:
            w = replace(w, filler="" if w.filler else r.choice(_FILLERS[3:]))
        elif how == 1:
            w = replace(w, lower=True)
        else:
            w = replace(w, pattern=(w.pattern + 1) % len(_PATTERNS))
        return Query(q.intent, w)

    def _paraphrase(self, q: Query) -> Query:
        """Other words for the same question: another sentence pattern, another synonym for
        the aspect (always) and maybe the sector, another filler."""
        r, w = self.rng, q.wording
        n_asp = len(_ASPECTS[q.intent.aspect])
        asp = (w.aspect_syn % n_asp + 1 + r.randrange(n_asp - 1)) % n_asp
        sec = w.sector_syn if r.random() < 0.5 else r.randrange(3)
        pattern = (w.pattern + 1 + r.randrange(len(_PATTERNS) - 1)) % len(_PATTERNS)
        return Query(q.intent, Wording(pattern, asp, sec, r.choice(_FILLERS)))

    def _new_plan(self, topic: _Topic) -> list[Query]:
        r = self.rng
        k = min(13, 1 + _poisson(r, 2.2))
        plan: list[Query] = []
        for _ in range(k):
            u = r.random()
            if plan and u < 0.16:
                plan.append(self._near_dup(r.choice(plan)))
            elif plan and u < 0.36:
                base = r.choice(plan)
                other = (base.intent.entity + 1 + r.randrange(7)) % 8
                plan.append(Query(replace(base.intent, entity=other), base.wording))
            else:
                plan.append(Query(self._intent(topic), self._wording()))
        return plan

    def _plan_for(self, topic: _Topic) -> list[Query]:
        r = self.rng
        if topic.plan is None:
            self.stats.new_plans += 1
            return self._new_plan(topic)
        u = r.random()
        if u < 0.3:
            self.stats.identical_plans += 1
            return list(topic.plan)
        if u < 0.3 + 0.7 * 0.5:
            self.stats.paraphrased_plans += 1
            return [self._paraphrase(q) for q in topic.plan]
        self.stats.new_plans += 1
        return self._new_plan(topic)

    def _count_pairs(self, plan: list[Query]) -> None:
        for a in range(len(plan)):
            for b in range(a + 1, len(plan)):
                self.stats.pairs += 1
                qa, qb = plan[a], plan[b]
                if qa.intent == qb.intent and qa.text() != qb.text():
                    self.stats.near_dup_pairs += 1
                elif (
                    qa.wording == qb.wording
                    and replace(qa.intent, entity=qb.intent.entity) == qb.intent
                    and qa.intent.entity != qb.intent.entity
                ):
                    self.stats.sibling_pairs += 1

    def random_query(self) -> Query:
        """A fresh question on a random catalogue topic, in random words (no plan, no
        repetition): what fills a cache with distinct entries."""
        topic = self.topics[self.rng.randrange(len(self.topics))]
        return Query(self._intent(topic), self._wording())

    def _crawl_url(self, topic: _Topic) -> str:
        r = self.rng
        if r.random() < 0.4:
            if topic.urls:
                return r.choice(topic.urls)
            if self._all_urls:
                return r.choice(self._all_urls)
        url = f"https://{r.choice(_DOMAINS)}/{r.getrandbits(40):010x}"
        topic.urls.append(url)
        self._all_urls.append(url)
        return url

    def jobs(self, n_jobs: int, mean_gap_s: float = 120.0) -> list[Request]:
        """The stream of ``n_jobs`` jobs' cacheable requests, in time order."""
        r = self.rng
        out: list[Request] = []
        t = 0.0
        for j in range(n_jobs):
            t += r.expovariate(1.0 / mean_gap_s)
            if r.random() < 0.3:
                topic = self.starters[r.randrange(14)]
            else:
                topic = self.topics[_bisect(self._cum, r.random())]
            plan = self._plan_for(topic)
            topic.plan = plan
            self._count_pairs(plan)
            self.stats.jobs += 1
            job = f"job-{j}"
            at = t
            for q in plan:
                at += r.uniform(3.0, 15.0)
                text = q.text()
                payload = search_payload(text)
                syn = (
                    q.wording.aspect_syn % len(_ASPECTS[q.intent.aspect]),
                    q.wording.sector_syn % 3,
                )
                out.append(Request(at, job, "search", payload, q.intent, q.ttl_s(), text, syn))
            for _ in range(r.choice((0, 0, 0, 1, 1, 1, 2, 2, 3, 3))):
                at += r.uniform(3.0, 15.0)
                url = self._crawl_url(topic)
                payload = json.dumps({"url": url}).encode()
                out.append(Request(at, job, "crawl", payload, url, 86400.0, url))
        out.sort(key=lambda q: q.t)
        self.stats.requests = len(out)
        return out


def search_payload(text: str) -> bytes:
    """The search handler's payload for a query, as DeerFlow's search tool sends it."""
    return json.dumps({"query": text, "max_results": 5, "search_depth": "basic"}).encode()


def _poisson(r: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= r.random()
        if p <= limit:
            return k
        k += 1


def _bisect(cum: list[float], u: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] < u:
            lo = mid + 1
        else:
            hi = mid
    return lo


def answer(q: Request) -> bytes:
    """The modelled answer: for a search, five result URLs. Three are the question's top
    results whatever the wording; one more comes from the question's next five and one from
    pages about the entity in general, both picked by the wording. So two wordings of one
    question share about 3.7 of 5 results (Jaccard about 0.6) and two questions about one
    entity share at most one page (at most 0.11). Crawls return the page."""
    if not isinstance(q.intent, Intent):
        return f"page text of {q.intent}".encode()
    i = q.intent
    r = random.Random(zlib.crc32(q.text.encode()))
    base = f"{i.sector}-{i.entity}-{i.region}-{i.aspect}-{i.mod}"
    core = [f"https://{_DOMAINS[k]}/{base}/{k}" for k in range(3)]
    extra = [f"https://{_DOMAINS[3 + k]}/{base}/more{k}" for k in range(5)]
    entity = [f"https://{_DOMAINS[8 + k]}/about/{i.sector}-{i.entity}-{i.region}" for k in range(2)]
    urls = [*core, r.choice(extra), r.choice(entity)]
    r.shuffle(urls)
    return json.dumps({"query": q.text, "results": [{"url": u} for u in urls]}).encode()
