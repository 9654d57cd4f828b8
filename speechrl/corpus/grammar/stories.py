"""Stories and their sentences: the derivation (a cast of entities → English and Spanish tokens, keywords,
questions), the productions (opening, weather, acquire, meet, middles, ending), whole stories and the
vocabulary they can emit. See :mod:`speechrl.corpus.grammar` for the grammar as a whole."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from speechrl.corpus.grammar.lexicon import (ACQUIRE, ADJECTIVES, AFTER_SITTING, BORROWED, CONTAINERS, DAYS,
                                             END_ACTIONS, END_TIMES, ES_DEFINITE, ES_INDEFINITE, FEELINGS,
                                             FUNCTION_WORDS, GENDER_WORD, GO_HOME, LANDMARK_PREPS, LANDMARKS, MEETS,
                                             MOVES, NAMES, OPPOSITES, PARTS_OF_DAY, PLACES, PRONOUNS, QUANTITIES,
                                             RELATIONS, RETURN, RETURN_TIMES, SEATS, STATE_ADJECTIVES, TEMPLATE_WORDS,
                                             THINGS, TRANSITIONS, WEATHER_DAY, WEATHER_WAS, Noun, Thing)

# ----------------------------------------------------------------------------------- data model


@dataclass
class QA:
    """A question about one sentence; ``answer`` is a span of that sentence (1–4 words); ``answers`` are
    one-sentence answers in the wordings the grammar can give them, the first the canonical one
    ("Where did Anna walk?" → "Anna walked to the market.", "She walked to the market.", "Anna went to
    the market."): each restates what the question asks with the span — the whole sentence only when the
    question asks about all of it ("What did she buy?" → "She bought three red apples.") — so no one
    wording answers every question about a sentence. They are a function of the production's own
    choices, made after them and drawing nothing from the story's random stream."""

    question: str
    answer: str
    answers: list[str] = field(default_factory=list)


@dataclass
class Sentence:
    """One story sentence with its Spanish translation, keywords and questions."""

    text: str
    translation: str
    keywords: list[str]
    questions: list[QA]
    role: str = ""  # which production made it: opening, weather, acquire, meet, …, ending


@dataclass
class Story:
    """A story with stable id (``s0001`` …) and the entities its sentences share.

    ``entities`` keys: name, gender (female/male), pronoun, companion, companion_gender, relation
    (as said, e.g. "sister", or ""), relation_key, place, object (singular noun), number
    (singular/plural), quantity ("a" or a numeral), adjective, landmark, ending (the ending
    action), ending_time, ending_adjective (yes/no).
    """

    id: str
    sentences: list[Sentence]
    entities: dict[str, str]

    @property
    def text(self) -> str:
        """All sentences joined with spaces."""
        return " ".join(s.text for s in self.sentences)


# ----------------------------------------------------------------------------- the derivation


@dataclass(frozen=True)
class _Cast:
    """The entities a story (or a stand-alone sentence) is built from."""

    name: str
    gender: str  # f | m
    companion: str
    companion_gender: str
    relation: str  # key of RELATIONS or ""
    place: str
    thing: str
    quantity: str  # "a" or a key of QUANTITIES
    adjective: str

    @property
    def plural(self) -> bool:
        return self.quantity != "a"

    @property
    def group_gender(self) -> str:
        """Spanish gender of "they" (protagonist + companion)."""
        return "f" if self.gender == "f" and self.companion_gender == "f" else "m"


@dataclass
class _Draft:
    """A sentence under construction: word tokens per language (commas are tokens)."""

    en: list[str]
    es: list[str]
    keywords: list[str]
    questions: list[QA]
    role: str


def _words(*phrases: str) -> list[str]:
    return [w for p in phrases for w in p.split()]


def _join(tokens: list[str], end: str = ".") -> str:
    """Tokens → sentence: commas attached, ``a el``/``de el`` contracted, first letter capitalised."""
    merged: list[str] = []
    for tok in tokens:
        if tok == "el" and merged and merged[-1] in ("a", "de"):
            merged[-1] = "al" if merged[-1] == "a" else "del"
        else:
            merged.append(tok)
    text = " ".join(merged).replace(" ,", ",")
    return text[:1].upper() + text[1:] + end


def _ask(*parts: str) -> str:
    return _join(_words(*parts), "?")


def _qa(question: str, span: str, *wordings: list[str]) -> QA:
    """A question, its span and its one-sentence answers (token lists, the canonical first; repeats dropped)."""
    return QA(question, span, list(dict.fromkeys(_join(w) for w in wordings)))


def _it(plural: bool) -> str:
    """The object pronoun of a thing: "it" or "them"."""
    return "them" if plural else "it"


def _a_or_an(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _en_np(det: str, thing: Thing, plural: bool, adjective: str | None) -> list[str]:
    """English noun phrase: det [adj] noun; ``det`` is "the", "a" (→ a/an) or a numeral."""
    words = ([adjective] if adjective else []) + [thing.noun.en_form(plural)]
    if det == "a":
        det = _a_or_an(words[0])
    return [det] + words


def _es_np(det: str, noun: Noun, plural: bool, adjective: str | None) -> list[str]:
    """Spanish noun phrase: det noun [adj], article and adjective agreeing with the noun."""
    if det == "the":
        article = ES_DEFINITE[(noun.gender, plural)]
    elif det == "a":
        article = ES_INDEFINITE[(noun.gender, plural)]
    else:
        article = QUANTITIES[det]
    words = [article, noun.es_form(plural)]
    if adjective:
        words.append(ADJECTIVES[adjective].es_form(noun.gender, plural))
    return words


def _the_place(place: str) -> tuple[list[str], list[str]]:
    noun = PLACES[place].noun
    return ["the", noun.en], _es_np("the", noun, False, None)


def _they(cast: _Cast) -> str:
    return "ellas" if cast.group_gender == "f" else "ellos"


def _finish(d: _Draft) -> Sentence:
    return Sentence(_join(d.en), _join(d.es), d.keywords, d.questions, d.role)


# ---------------------------------------------------------------------------------- productions


def _time_phrase(rng: random.Random) -> tuple[str, str]:
    """When the story starts: "in the morning", "on Monday afternoon", "early in the morning"…"""
    part_en, part_es = rng.choice(PARTS_OF_DAY)
    form = rng.randrange(4)
    if form == 0:
        return f"in the {part_en}", part_es
    if form == 1:
        return "early in the morning", "temprano por la mañana"
    day_en, day_es = rng.choice(DAYS)
    if form == 2:
        return f"on {day_en}", f"el {day_es}"
    return f"on {day_en} {part_en}", f"el {day_es} {part_es}"


def _opening(cast: _Cast, rng: random.Random) -> _Draft:
    """ "Anna walked to the market on Monday morning." """
    move, es_prep = MOVES[rng.choice(tuple(MOVES))]
    when_en, when_es = _time_phrase(rng)
    place_en, place_es = _the_place(cast.place)
    core_en = [cast.name, *_words(move.en_past, "to"), *place_en]
    core_es = [cast.name, move.es, es_prep, *place_es]
    if rng.random() < 0.3:
        en, es = [*_words(when_en), ",", *core_en], [*_words(when_es), ",", *core_es]
    else:
        en, es = [*core_en, *_words(when_en)], [*core_es, *_words(when_es)]
    name, went, she = cast.name, move.en_past, PRONOUNS[cast.gender][0]
    went_to, when = _words(went, "to", *place_en), _words(when_en)
    questions = [
        _qa(_ask("where did", name, move.en_base), " ".join(["to", *place_en]),
            [name, *went_to], [she, *went_to], [name, "went", "to", *place_en]),
        _qa(_ask("who", went, "to", *place_en), name, [name, *went_to], ["it", "was", name], [name, "did"]),
        _qa(_ask("when did", name, move.en_base, "to", *place_en), when_en,
            [name, *went_to, *when], [*when, ",", name, *went_to], [she, *went_to, *when]),
    ]
    return _Draft(en, es, [cast.name, place_en[-1]], questions, "opening")


def _weather(cast: _Cast, rng: random.Random) -> _Draft:
    """ "It was a sunny day." / "The weather was cold." """
    if rng.random() < 0.6:
        en_w, es_w = rng.choice(WEATHER_DAY)
        en, es = _words("it was", _a_or_an(en_w), en_w, "day"), _words("era un día", es_w)
        qa = _qa("What kind of day was it?", f"{_a_or_an(en_w)} {en_w} day", en,
                 _words("the day was", en_w), _words("it was", en_w))
    else:
        en_w, es_w = rng.choice(WEATHER_WAS)
        en, es = _words("the weather was", en_w), _words(es_w)
        qa = _qa("How was the weather?", en_w, en, _words("it was", en_w))
    return _Draft(en, es, [], [qa], "weather")


def _acquire(cast: _Cast, rng: random.Random) -> _Draft:
    """ "She bought three red apples." (optionally "At the market, she bought …") """
    place, thing = PLACES[cast.place], THINGS[cast.thing]
    verb = ACQUIRE[place.acquire]
    subj_en, subj_es = PRONOUNS[cast.gender][0], PRONOUNS[cast.gender][3]
    obj_en = _en_np(cast.quantity, thing, cast.plural, cast.adjective)
    obj_es = _es_np(cast.quantity, thing.noun, cast.plural, cast.adjective)
    verb_es = [verb.es]
    if place.acquire == "borrow":
        verb_es.append(BORROWED.es_form(thing.noun.gender, cast.plural))
    en = [subj_en, verb.en_past, *obj_en]
    es = [subj_es, *verb_es, *obj_es]
    noun_en = thing.noun.en_form(cast.plural)
    name, got = cast.name, verb.en_past
    questions = [_qa(_ask("what did", subj_en, verb.en_base), " ".join(obj_en),
                     [subj_en, got, *obj_en], [name, got, *obj_en])]
    if rng.random() < 0.3:
        place_en, place_es = _the_place(cast.place)
        en = [place.en_at, *place_en, ",", *en]
        es = ["en", *place_es, ",", *es]
        at_place = [place.en_at, *place_en]
        questions.append(_qa(_ask("where did", subj_en, verb.en_base, "the", noun_en), " ".join(at_place),
                             [subj_en, got, "the", noun_en, *at_place], [name, got, "the", noun_en, *at_place],
                             [subj_en, got, _it(cast.plural), *at_place],
                             [*at_place, ",", subj_en, got, "the", noun_en]))
    if cast.plural:
        questions.append(_qa(_ask("how many", noun_en, "did", subj_en, verb.en_base), cast.quantity,
                             [subj_en, got, cast.quantity, noun_en], [name, got, cast.quantity, noun_en],
                             [subj_en, got, cast.quantity]))
    if ADJECTIVES[cast.adjective].color:
        be = "were" if cast.plural else "was"
        questions.append(_qa(_ask("what color", be, "the", noun_en), cast.adjective,
                             ["the", noun_en, be, cast.adjective], ["they" if cast.plural else "it", be, cast.adjective]))
    keywords = ([place.noun.en] if "," in en else []) + [noun_en]
    return _Draft(en, es, keywords, questions, "acquire")


def _meet(cast: _Cast, rng: random.Random, landmark: str) -> _Draft:
    """ "Then, she met her friend Tom near the river." """
    trans_en, trans_es = rng.choice(TRANSITIONS)
    verb = MEETS[rng.choice(tuple(MEETS))]
    prep_en, prep_es = rng.choice(LANDMARK_PREPS)
    subj_en, _, poss_en, subj_es = PRONOUNS[cast.gender]
    who_en, who_es = [cast.companion], [cast.companion]
    if cast.relation:
        rel = RELATIONS[cast.relation]
        female = cast.companion_gender == "f"
        who_en = [poss_en, rel[1] if female else rel[0], cast.companion]
        who_es = ["su", rel[3] if female else rel[2], cast.companion]
    mark = LANDMARKS[landmark]
    where_en = [*_words(prep_en), "the", mark.en]
    en = [*_words(trans_en), ",", subj_en, verb.en_past, *who_en, *where_en]
    es = [*_words(trans_es), ",", subj_es, *_words(verb.es), *who_es, *_words(prep_es),
          *_es_np("the", mark, False, None)]
    name, friend, met = cast.name, cast.companion, verb.en_past
    friend_obj = PRONOUNS[cast.companion_gender][1]
    questions = [
        _qa(_ask("who did", subj_en, verb.en_base), friend,
            [subj_en, met, *who_en], [name, met, *who_en], [subj_en, met, friend]),
        _qa(_ask("where did", subj_en, verb.en_base, friend), " ".join(where_en),
            [subj_en, met, friend, *where_en], [name, met, friend, *where_en], [subj_en, met, friend_obj, *where_en]),
    ]
    return _Draft(en, es, [cast.companion, mark.en], questions, "meet")


def _sit(cast: _Cast, rng: random.Random) -> _Draft:
    """ "They sat on a bench and talked." """
    seat_en, seat_es = rng.choice(SEATS)
    then_en, then_es = rng.choice(AFTER_SITTING)
    en = _words("they sat", seat_en, "and", then_en)
    es = _words(_they(cast), "se sentaron", seat_es, "y", then_es)
    qa = _qa("Where did they sit?", seat_en, _words("they sat", seat_en),
             _words(cast.name, "and", cast.companion, "sat", seat_en))
    return _Draft(en, es, [], [qa], "sit")


def _carry(cast: _Cast, rng: random.Random) -> _Draft:
    """ "Tom carried the apples in a basket." """
    box_en, box_es = rng.choice(CONTAINERS)
    thing = THINGS[cast.thing]
    obj_en = _en_np("the", thing, cast.plural, None)
    en = [cast.companion, "carried", *obj_en, "in", "a", box_en]
    es = [cast.companion, "llevó", *_es_np("the", thing.noun, cast.plural, None), "en", *_words(box_es)]
    friend, friend_subj, be = cast.companion, PRONOUNS[cast.companion_gender][0], "were" if cast.plural else "was"
    carried = [friend, "carried", *obj_en]
    questions = [
        _qa(_ask("who carried", *obj_en), friend, carried, ["it", "was", friend], [friend, "did"]),
        _qa(_ask("what did", friend, "carry", *obj_en, "in"), f"a {box_en}", [*carried, "in", "a", box_en],
            [friend_subj, "carried", _it(cast.plural), "in", "a", box_en], [*obj_en, be, "in", "a", box_en]),
    ]
    return _Draft(en, es, [cast.companion, obj_en[-1]], questions, "carry")


def _describe(cast: _Cast, rng: random.Random) -> _Draft:
    """ "The apples were very sweet." — never a colour or a size that contradicts the acquisition. """
    thing = THINGS[cast.thing]
    clash = {cast.adjective, OPPOSITES.get(cast.adjective, "")}
    options = [a for a in thing.adjectives if not ADJECTIVES[a].color and a not in clash] or [cast.adjective]
    adjective = rng.choice(options)
    obj_en = _en_np("the", thing, cast.plural, None)
    be_en = "were" if cast.plural else "was"
    if adjective in STATE_ADJECTIVES:
        be_es = "estaban" if cast.plural else "estaba"
    else:
        be_es = "eran" if cast.plural else "era"
    en = [*obj_en, be_en, "very", adjective]
    es = [*_es_np("the", thing.noun, cast.plural, None), be_es, "muy",
          ADJECTIVES[adjective].es_form(thing.noun.gender, cast.plural)]
    questions = [_qa(_ask("what", be_en, *obj_en, "like"), f"very {adjective}", en,
                     ["they" if cast.plural else "it", be_en, "very", adjective])]
    return _Draft(en, es, [obj_en[-1]], questions, "describe")


def _like(cast: _Cast, rng: random.Random) -> _Draft:
    """ "Tom liked the apples very much." — Spanish *gustar* agrees with the object. """
    thing = THINGS[cast.thing]
    obj_en = _en_np("the", thing, cast.plural, None)
    en = [cast.companion, "liked", *obj_en, "very", "much"]
    es = ["a", cast.companion, "le", "gustaron" if cast.plural else "gustó", "mucho",
          *_es_np("the", thing.noun, cast.plural, None)]
    liked = [cast.companion, "liked", *obj_en]
    questions = [_qa(_ask("what did", cast.companion, "like"), " ".join(obj_en), liked, en,
                     [PRONOUNS[cast.companion_gender][0], "liked", *obj_en])]
    return _Draft(en, es, [cast.companion, obj_en[-1]], questions, "like")


def _feel(cast: _Cast, rng: random.Random) -> _Draft:
    """ "She was very tired." / "Tom was very happy." / "They were very hungry." """
    feeling = rng.choice(tuple(FEELINGS))
    complement = FEELINGS[feeling]
    who = rng.randrange(3)
    if who == 0:
        subj_en, subj_es, gender, plural = PRONOUNS[cast.gender][0], PRONOUNS[cast.gender][3], cast.gender, False
    elif who == 1:
        subj_en, subj_es, gender, plural = cast.companion, cast.companion, cast.companion_gender, False
    else:
        subj_en, subj_es, gender, plural = "they", _they(cast), cast.group_gender, True
    en = [subj_en, "were" if plural else "was", "very", feeling]
    if isinstance(complement, str):
        es = [subj_es, "tenían" if plural else "tenía", *_words(complement)]
    else:
        es = [subj_es, "estaban" if plural else "estaba", "muy", complement.es_form(gender, plural)]
    keywords = [cast.companion] if who == 1 else []
    # the other way to name the one who felt it: the name for a pronoun, a pronoun for the name
    other = ([cast.name], [PRONOUNS[cast.companion_gender][0]], [cast.name, "and", cast.companion])[who]
    qa = _qa(_ask("how did", subj_en, "feel"), f"very {feeling}", en, [*other, *en[1:]])
    return _Draft(en, es, keywords, [qa], "feel")


def _go_home(cast: _Cast, rng: random.Random) -> _Draft:
    """ "They went home together." """
    verb_en, base, verb_es = rng.choice(GO_HOME)
    together = "juntas" if cast.group_gender == "f" else "juntos"
    en = ["they", verb_en, "home", "together"]
    es = [_they(cast), verb_es, together, "a", "casa"]
    qa = _qa(_ask("where did they", base, "together"), "home", en, ["they", verb_en, "home"],
             [cast.name, "and", cast.companion, verb_en, "home", "together"])
    return _Draft(en, es, [], [qa], "home")


# optional sentences between the meeting and the ending, in story order
MIDDLES = (_sit, _carry, _describe, _like, _feel, _go_home)


@dataclass(frozen=True)
class _EndingPlan:
    """The random choices of an ending, kept so a perturbed ending can be rendered the same way."""

    action: str  # key of END_ACTIONS or RETURN
    time: str  # key of END_TIMES or RETURN_TIMES
    with_adjective: bool


def _plan_ending(cast: _Cast, rng: random.Random) -> _EndingPlan:
    if rng.random() < 0.2:
        return _EndingPlan(RETURN, rng.choice(tuple(RETURN_TIMES)), False)
    return _EndingPlan(rng.choice(THINGS[cast.thing].uses), rng.choice(tuple(END_TIMES)), rng.random() < 0.4)


def _ending(cast: _Cast, plan: _EndingPlan) -> _Draft:
    """The coherent ending: it names the protagonist, the companion and the object or the place."""
    name, friend, she, when = cast.name, cast.companion, PRONOUNS[cast.gender][0], _words(plan.time)
    if plan.action == RETURN:
        place_en, place_es = _the_place(cast.place)
        when_es = RETURN_TIMES[plan.time]
        en = [*when, ",", name, "went", "back", "to", *place_en, "with", friend]
        es = [*_words(when_es), ",", name, "volvió", "a", *place_es, "con", friend]
        back_to = ["went", "back", "to", *place_en]
        questions = [
            _qa(_ask("where did", name, "go back to"), " ".join(place_en), [name, *back_to], [she, *back_to]),
            _qa(_ask("who did", name, "go back with"), friend, [name, "went", "back", "with", friend],
                [she, "went", "back", "with", friend]),
            _qa(_ask("when did", name, "go back to", *place_en), plan.time, [name, *back_to, *when],
                [*when, ",", name, *back_to], [she, *back_to, *when]),
        ]
        return _Draft(en, es, [name, place_en[-1], friend], questions, "ending")

    action = END_ACTIONS[plan.action]
    verb, thing = action.verb, THINGS[cast.thing]
    adjective = cast.adjective if plan.with_adjective else None
    obj_en = _en_np("the", thing, cast.plural, adjective)
    obj_es = _es_np("the", thing.noun, cast.plural, adjective)
    head_en = [*_words(plan.time), ",", name, *_words(verb.en_past), *obj_en]
    head_es = [*_words(END_TIMES[plan.time]), ",", name, *_words(verb.es), *obj_es]
    obj, did, it = " ".join(obj_en), _words(verb.en_past), _it(cast.plural)
    questions = [_qa(_ask("what did", name, verb.en_base), obj, [name, *did, *obj_en], [she, *did, *obj_en])]
    if action.frame == "vase":
        en, es = [*head_en, "in", "a", "vase"], [*head_es, "en", "un", "jarrón"]
        in_vase = ["in", "a", "vase"]
        questions = [_qa(_ask("where did", name, "put", obj), "in a vase", [name, *did, *obj_en, *in_vase],
                         [she, *did, *obj_en, *in_vase], [name, *did, it, *in_vase])]
    elif action.frame == "to":
        en, es = [*head_en, "to", friend], [*head_es, "a", friend]
        to = ["to", friend]
        questions = [_qa(_ask("what did", name, verb.en_base, "to", friend), obj, [name, *did, *obj_en, *to],
                         [she, *did, *obj_en, *to]),
                     _qa(_ask("who did", name, verb.en_base, obj, "to"), friend, [name, *did, *obj_en, *to],
                         [name, *did, it, *to], [she, *did, *obj_en, *to])]
    else:
        prep_en, prep_es = ("for", "para") if action.frame == "for" else ("with", "con")
        en, es = [*head_en, prep_en, friend], [*head_es, prep_es, friend]
        if action.frame == "with_home":
            en, es = [*en, "at", "home"], [*es, "en", "casa"]
        to = [prep_en, friend]
        questions.append(_qa(_ask("who did", name, verb.en_base, obj, prep_en), friend, [name, *did, *obj_en, *to],
                             [name, *did, it, *to], [she, *did, *obj_en, *to]))
    questions.append(_qa(_ask("when did", name, verb.en_base, obj), plan.time, [name, *did, *obj_en, *when],
                         [*when, ",", name, *did, *obj_en], [she, *did, *obj_en, *when]))
    keywords = [name, obj_en[-1]] + ([friend] if friend in en else [])
    return _Draft(en, es, keywords, questions, "ending")


# ---------------------------------------------------------------------------------------- stories


def _random_cast(rng: random.Random) -> _Cast:
    gender = rng.choice(("f", "m"))
    name = rng.choice(NAMES[gender])
    companion_gender = rng.choice(("f", "m"))
    companion = rng.choice(tuple(n for n in NAMES[companion_gender] if n != name))
    relation = rng.choice(("",) + tuple(RELATIONS))
    place = rng.choice(tuple(PLACES))
    thing = rng.choice(PLACES[place].things)
    quantity = "a" if rng.random() < 0.3 else rng.choice(tuple(QUANTITIES))
    adjective = rng.choice(THINGS[thing].adjectives)
    return _Cast(name, gender, companion, companion_gender, relation, place, thing, quantity, adjective)


def _entities(cast: _Cast, landmark: str, plan: _EndingPlan) -> dict[str, str]:
    relation = ""
    if cast.relation:
        relation = RELATIONS[cast.relation][1 if cast.companion_gender == "f" else 0]
    return {
        "name": cast.name,
        "gender": GENDER_WORD[cast.gender],
        "pronoun": PRONOUNS[cast.gender][0],
        "companion": cast.companion,
        "companion_gender": GENDER_WORD[cast.companion_gender],
        "relation": relation,
        "relation_key": cast.relation,
        "place": cast.place,
        "object": cast.thing,
        "number": "plural" if cast.plural else "singular",
        "quantity": cast.quantity,
        "adjective": cast.adjective,
        "landmark": landmark,
        "ending": plan.action,
        "ending_time": plan.time,
        "ending_adjective": "yes" if plan.with_adjective else "no",
    }


def _cast_from_entities(entities: dict[str, str]) -> tuple[_Cast, _EndingPlan]:
    """Inverse of :func:`_entities` (what the cloze builder needs to re-render an ending)."""
    gender = {v: k for k, v in GENDER_WORD.items()}
    cast = _Cast(entities["name"], gender[entities["gender"]], entities["companion"],
                 gender[entities["companion_gender"]], entities["relation_key"], entities["place"],
                 entities["object"], entities["quantity"], entities["adjective"])
    plan = _EndingPlan(entities["ending"], entities["ending_time"], entities["ending_adjective"] == "yes")
    return cast, plan


def _generate_story(story_id: str, rng: random.Random) -> Story:
    cast = _random_cast(rng)
    landmark = rng.choice(tuple(LANDMARKS))
    drafts = [_opening(cast, rng)]
    with_weather = rng.random() < 0.35
    if with_weather:
        drafts.append(_weather(cast, rng))
    drafts += [_acquire(cast, rng), _meet(cast, rng, landmark)]
    n_middle = rng.randint(0, 2 - int(with_weather))
    chosen = sorted(rng.sample(range(len(MIDDLES)), n_middle))
    drafts += [MIDDLES[i](cast, rng) for i in chosen]
    plan = _plan_ending(cast, rng)
    drafts.append(_ending(cast, plan))
    return Story(story_id, [_finish(d) for d in drafts], _entities(cast, landmark, plan))


def generate_stories(n: int, seed: int) -> list[Story]:
    """``n`` stories ``s0001`` … ; the same seed gives the same stories (and a prefix for smaller n)."""
    rng = random.Random(seed)
    return [_generate_story(f"s{i + 1:04d}", rng) for i in range(n)]


def fresh_sentences(n: int, seed: int, exclude: set[str]) -> list[str]:
    """``n`` distinct sentences of new stories (drawn with ``seed``), none of them in ``exclude``:
    text-only prompts for a method that needs no reference speech (TTS RL)."""
    rng = random.Random(f"fresh-{seed}")  # a stream of its own: not the corpus's stories again
    seen, out = set(exclude), []
    for i in range(50 * n + 100):
        for sentence in _generate_story(f"f{i + 1:05d}", rng).sentences:
            if len(out) < n and sentence.text not in seen:
                seen.add(sentence.text)
                out.append(sentence.text)
        if len(out) == n:
            return out
    raise ValueError(f"the grammar gave only {len(out)} new sentences, not {n}")


def fresh_stories(n: int, seed: int, exclude: set[tuple[str, ...]]) -> list[Story]:
    """``n`` new stories ``l00001`` … (drawn with ``seed``, a stream of its own), none of whose context
    (every sentence but the ending) is in ``exclude``, and no two alike: long-form pretraining text that
    tells no held-out story (pass the contexts of every evaluation story)."""
    rng = random.Random(f"long-form-{seed}")
    seen, out = set(exclude), []
    for i in range(50 * n + 100):
        story = _generate_story(f"l{len(out) + 1:05d}", rng)
        context = tuple(s.text for s in story.sentences[:-1])
        if context not in seen:
            seen.add(context)
            out.append(story)
        if len(out) == n:
            return out
    raise ValueError(f"the grammar gave only {len(out)} new stories, not {n}")


# ------------------------------------------------------------------------------------ vocabulary


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    words: set[str] = set(TEMPLATE_WORDS)
    words.update(n.lower() for names in NAMES.values() for n in names)
    words.update(w for p in PRONOUNS.values() for w in p[:3])
    words.update(w for r in RELATIONS.values() for w in r[:2])
    words.update(ADJECTIVES)
    words.update(w for t in THINGS.values() for w in (t.noun.en, t.noun.en_pl))
    words.update(n.en for n in [p.noun for p in PLACES.values()] + list(LANDMARKS.values()))
    verbs = list(ACQUIRE.values()) + [m[0] for m in MOVES.values()] + list(MEETS.values())
    verbs += [a.verb for a in END_ACTIONS.values()]
    words.update(w for v in verbs for w in _words(v.en_past, v.en_base))
    phrases = [d for d, _ in DAYS] + [p for p, _ in PARTS_OF_DAY] + list(QUANTITIES)
    phrases += [w for w, _ in WEATHER_DAY + WEATHER_WAS + TRANSITIONS + SEATS + AFTER_SITTING + CONTAINERS]
    phrases += [p for p, _ in LANDMARK_PREPS] + list(FEELINGS) + [w for g in GO_HOME for w in g[:2]]
    phrases += list(END_TIMES) + list(RETURN_TIMES)
    words.update(w.lower() for p in phrases for w in p.split())
    return frozenset(words)


def vocabulary() -> set[str]:
    """Every English word (lowercase) the grammar can emit, in stories, questions and answers."""
    return set(_vocabulary())


def english_content_words() -> set[str]:
    """Vocabulary minus closed-class words and names: the words a translation must not keep."""
    names = {n.lower() for names in NAMES.values() for n in names}
    return set(_vocabulary() - FUNCTION_WORDS - names)
