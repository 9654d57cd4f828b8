"""Text side of the synthesized spoken corpus: a small bilingual grammar of short stories.

Every story has 4–6 short sentences about one protagonist (name + pronoun), a place, an object
(with a quantity and an adjective) and a companion:

    Anna walked to the market on Monday morning.      Anna caminó al mercado el lunes por la mañana.
    She bought three red apples.                      Ella compró tres manzanas rojas.
    Then, she met her friend Tom near the river.      Luego, ella se encontró con su amigo Tom cerca del río.
    In the evening, Anna ate the apples with Tom at home.
                                                      Por la noche, Anna comió las manzanas con Tom en casa.

The last sentence is a *coherent ending*: it depends on the protagonist, the companion, the object
(or the place) introduced earlier, which is what the story-cloze builders perturb.

Translation is not word-by-word: each production emits English and Spanish from the same
derivation (the same cast and lexical choices), and the Spanish side applies its own rules —
adjective after the noun, gender and number agreement of articles and adjectives, preterite
conjugation (3rd person singular/plural), ``a el → al`` / ``de el → del``, *gustar* agreeing with
its object, *tomar prestado* agreeing with the borrowed thing.

Each sentence carries questions about its own content whose answers are spans of the sentence
(spoken QA), and keywords (names, places, landmarks, objects; for the ASR keyword reward).

Evaluation builders for Align-SLM's likelihood minimal pairs: :func:`story_cloze_pairs`
(S-/T-StoryCloze), :func:`blimp_pairs` (sBLIMP) and :func:`wuggy_pairs` (sWUGGY).

The vocabulary is small (≈220 words, see :func:`vocabulary`), every word is in the CMU dictionary,
numbers are spelled as words, and it never holds both members of a common homophone pair: no
"two", "four", "eight", "one" (to/for/ate/won), no "read" (red), "sea", "by", "son", "flour".
Everything is deterministic per seed: only ``random.Random(seed)`` is used, and every random choice
is made from a tuple or list in a fixed order.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "QA",
    "Sentence",
    "Story",
    "ClozePair",
    "BlimpPair",
    "WuggyPair",
    "generate_stories",
    "fresh_sentences",
    "story_cloze_pairs",
    "blimp_pairs",
    "wuggy_pairs",
    "vocabulary",
    "english_content_words",
    "BLIMP_PHENOMENA",
]

# ----------------------------------------------------------------------------------- data model


@dataclass
class QA:
    """A question about one sentence; ``answer`` is a span of that sentence (1–4 words)."""

    question: str
    answer: str


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


@dataclass(frozen=True)
class ClozePair:
    """A story-cloze item: context sentences, the true ending and a wrong one.

    kind ``ssc`` (semantic): the wrong ending is the same production with one entity swapped
    (``perturbation``: name, companion, object or place), so it is fluent but contradicts the story.
    kind ``tsc`` (topic): the wrong ending is the ending of story ``wrong_from``.
    """

    context: tuple[str, ...]
    correct: str
    wrong: str
    kind: str
    story_id: str
    wrong_from: str
    perturbation: str = ""


@dataclass(frozen=True)
class BlimpPair:
    """A grammatical sentence and a minimally different ungrammatical one."""

    good: str
    bad: str
    phenomenon: str


@dataclass(frozen=True)
class WuggyPair:
    """A vocabulary word and a pronounceable non-word of the same length."""

    word: str
    nonword: str


# --------------------------------------------------------------------------------- lexicon types


@dataclass(frozen=True)
class Noun:
    """A count noun in both languages; ``gender`` is the Spanish gender, ``m`` or ``f``."""

    en: str
    en_pl: str
    es: str
    es_pl: str
    gender: str

    def en_form(self, plural: bool) -> str:
        return self.en_pl if plural else self.en

    def es_form(self, plural: bool) -> str:
        return self.es_pl if plural else self.es


@dataclass(frozen=True)
class Adjective:
    """An adjective; Spanish forms indexed by (gender, plural)."""

    en: str
    es_m: str
    es_f: str
    es_m_pl: str
    es_f_pl: str
    color: bool = False

    def es_form(self, gender: str, plural: bool) -> str:
        if gender == "f":
            return self.es_f_pl if plural else self.es_f
        return self.es_m_pl if plural else self.es_m


def _adj(en: str, es: str, *, color: bool = False, es_pl: str | None = None) -> Adjective:
    """Spanish adjective forms by rule: -o inflects for gender; others only for number."""
    if es.endswith("o"):
        stem = es[:-1]
        return Adjective(en, es, stem + "a", stem + "os", stem + "as", color)
    plural = es_pl or (es + "s" if es[-1] in "aeiou" else es + "es")
    return Adjective(en, es, es, plural, plural, color)


@dataclass(frozen=True)
class Thing:
    """An object a protagonist can get: the noun, adjectives that fit it, ending actions that fit it."""

    noun: Noun
    adjectives: tuple[str, ...]
    uses: tuple[str, ...]


@dataclass(frozen=True)
class Place:
    """Where the story starts: the noun, its English locative preposition, how things are got there."""

    noun: Noun
    en_at: str  # "at the market", "in the park"
    acquire: str  # key of ACQUIRE
    things: tuple[str, ...]


@dataclass(frozen=True)
class Verb:
    """A verb: English past and base form, Spanish 3rd person preterite singular."""

    en_past: str
    en_base: str
    es: str


@dataclass(frozen=True)
class EndAction:
    """An ending action on the story's object; ``frame`` selects the sentence shape."""

    verb: Verb
    frame: str  # with_home | with | for | to | vase


# ------------------------------------------------------------------------------ lexicon tables

NAMES: dict[str, tuple[str, ...]] = {
    "f": ("Anna", "Emma", "Lucy", "Laura", "Julia", "Olivia", "Alice", "Helen"),
    "m": ("Tom", "David", "Peter", "Daniel", "Max", "Oliver", "Jack", "Henry"),
}
GENDER_WORD = {"f": "female", "m": "male"}
# subject, object, possessive; Spanish subject
PRONOUNS: dict[str, tuple[str, str, str, str]] = {
    "f": ("she", "her", "her", "ella"),
    "m": ("he", "him", "his", "él"),
}
# English (for a male / female companion), Spanish (male / female)
RELATIONS: dict[str, tuple[str, str, str, str]] = {
    "friend": ("friend", "friend", "amigo", "amiga"),
    "sibling": ("brother", "sister", "hermano", "hermana"),
    "cousin": ("cousin", "cousin", "primo", "prima"),
    "neighbor": ("neighbor", "neighbor", "vecino", "vecina"),
}

ADJECTIVES: dict[str, Adjective] = {
    a.en: a
    for a in (
        _adj("red", "rojo", color=True),
        _adj("green", "verde", color=True),
        _adj("yellow", "amarillo", color=True),
        _adj("blue", "azul", color=True),
        _adj("white", "blanco", color=True),
        _adj("black", "negro", color=True),
        _adj("brown", "marrón", color=True, es_pl="marrones"),
        _adj("big", "grande"),
        _adj("small", "pequeño"),
        _adj("fresh", "fresco"),
        _adj("sweet", "dulce"),
        _adj("warm", "caliente"),
        _adj("old", "viejo"),
        _adj("new", "nuevo"),
        _adj("pretty", "bonito"),
        _adj("round", "redondo"),
        _adj("smooth", "liso"),
        _adj("long", "largo"),
    )
}

THINGS: dict[str, Thing] = {
    "apple": Thing(Noun("apple", "apples", "manzana", "manzanas", "f"),
                   ("red", "green", "yellow", "fresh", "big", "small", "sweet"), ("eat", "share", "give")),
    "orange": Thing(Noun("orange", "oranges", "naranja", "naranjas", "f"),
                    ("fresh", "big", "small", "sweet"), ("eat", "share", "give")),
    "egg": Thing(Noun("egg", "eggs", "huevo", "huevos", "m"),
                 ("fresh", "brown", "white", "big", "small"), ("cook", "share", "give")),
    "tomato": Thing(Noun("tomato", "tomatoes", "tomate", "tomates", "m"),
                    ("red", "green", "fresh", "big", "small"), ("cook", "eat", "share")),
    "potato": Thing(Noun("potato", "potatoes", "patata", "patatas", "f"),
                    ("big", "small", "fresh"), ("cook", "share")),
    "cake": Thing(Noun("cake", "cakes", "pastel", "pasteles", "m"),
                  ("sweet", "small", "big", "warm"), ("eat", "share", "give")),
    "cookie": Thing(Noun("cookie", "cookies", "galleta", "galletas", "f"),
                    ("sweet", "small", "big", "warm"), ("eat", "share", "give")),
    "pie": Thing(Noun("pie", "pies", "tarta", "tartas", "f"),
                 ("warm", "sweet", "big", "small"), ("eat", "share", "give")),
    "mushroom": Thing(Noun("mushroom", "mushrooms", "seta", "setas", "f"),
                      ("brown", "white", "small", "big", "fresh"), ("cook", "share", "show")),
    "cup": Thing(Noun("cup", "cups", "taza", "tazas", "f"),
                 ("red", "blue", "white", "green", "small", "big", "new", "old"), ("give", "show")),
    "plate": Thing(Noun("plate", "plates", "plato", "platos", "m"),
                   ("white", "blue", "big", "small", "new", "old"), ("give", "show")),
    "candle": Thing(Noun("candle", "candles", "vela", "velas", "f"),
                    ("white", "red", "yellow", "small", "big", "long"), ("light", "give")),
    "hat": Thing(Noun("hat", "hats", "sombrero", "sombreros", "m"),
                 ("red", "blue", "black", "green", "brown", "big", "small", "new", "old"), ("give", "show")),
    "book": Thing(Noun("book", "books", "libro", "libros", "m"),
                  ("old", "new", "big", "small", "red", "blue"), ("look", "give", "show")),
    "map": Thing(Noun("map", "maps", "mapa", "mapas", "m"),
                 ("old", "new", "big", "small"), ("look", "give", "show")),
    "shell": Thing(Noun("shell", "shells", "concha", "conchas", "f"),
                   ("white", "small", "big", "pretty"), ("show", "give")),
    "stone": Thing(Noun("stone", "stones", "piedra", "piedras", "f"),
                   ("round", "smooth", "white", "black", "small", "big"), ("show", "give")),
    "feather": Thing(Noun("feather", "feathers", "pluma", "plumas", "f"),
                     ("white", "black", "blue", "long", "small"), ("show", "give")),
    "leaf": Thing(Noun("leaf", "leaves", "hoja", "hojas", "f"),
                  ("green", "yellow", "brown", "red", "big", "small"), ("show", "give")),
    "flower": Thing(Noun("flower", "flowers", "flor", "flores", "f"),
                    ("red", "yellow", "white", "blue", "pretty", "fresh"), ("vase", "give")),
}

OPPOSITES = {"big": "small", "small": "big", "old": "new", "new": "old"}
STATE_ADJECTIVES = frozenset({"fresh", "warm", "sweet"})  # Spanish "estar"; the others take "ser"

ACQUIRE: dict[str, Verb] = {
    "buy": Verb("bought", "buy", "compró"),
    "find": Verb("found", "find", "encontró"),
    "pick": Verb("picked", "pick", "recogió"),
    "borrow": Verb("borrowed", "borrow", "tomó"),  # + "prestado" agreeing with the object
}

PLACES: dict[str, Place] = {
    "market": Place(Noun("market", "markets", "mercado", "mercados", "m"), "at", "buy",
                    ("apple", "orange", "egg", "tomato", "potato", "flower")),
    "bakery": Place(Noun("bakery", "bakeries", "panadería", "panaderías", "f"), "at", "buy",
                    ("cake", "cookie", "pie")),
    "shop": Place(Noun("shop", "shops", "tienda", "tiendas", "f"), "at", "buy",
                  ("cup", "plate", "candle", "hat", "map")),
    "farm": Place(Noun("farm", "farms", "granja", "granjas", "f"), "at", "buy",
                  ("egg", "apple", "potato", "tomato")),
    "garden": Place(Noun("garden", "gardens", "jardín", "jardines", "m"), "in", "pick",
                    ("apple", "tomato", "flower")),
    "beach": Place(Noun("beach", "beaches", "playa", "playas", "f"), "at", "find",
                   ("shell", "stone", "feather")),
    "park": Place(Noun("park", "parks", "parque", "parques", "m"), "in", "find",
                  ("feather", "leaf", "stone")),
    "forest": Place(Noun("forest", "forests", "bosque", "bosques", "m"), "in", "find",
                    ("mushroom", "leaf", "feather", "stone")),
    "library": Place(Noun("library", "libraries", "biblioteca", "bibliotecas", "f"), "at", "borrow",
                     ("book", "map")),
}

# movement verb + the Spanish preposition it takes before the destination
MOVES: dict[str, tuple[Verb, str]] = {
    "walk": (Verb("walked", "walk", "caminó"), "a"),
    "go": (Verb("went", "go", "fue"), "a"),
    "run": (Verb("ran", "run", "corrió"), "a"),
    "drive": (Verb("drove", "drive", "condujo"), "hasta"),
}

DAYS: tuple[tuple[str, str], ...] = (
    ("Monday", "lunes"), ("Tuesday", "martes"), ("Wednesday", "miércoles"), ("Thursday", "jueves"),
    ("Friday", "viernes"), ("Saturday", "sábado"), ("Sunday", "domingo"),
)
PARTS_OF_DAY: tuple[tuple[str, str], ...] = (("morning", "por la mañana"), ("afternoon", "por la tarde"))

# "a" is the singular indefinite article (a/an, un/una); the rest are plural numerals
QUANTITIES: dict[str, str] = {"three": "tres", "five": "cinco", "six": "seis", "seven": "siete", "ten": "diez"}

WEATHER_DAY: tuple[tuple[str, str], ...] = (
    ("sunny", "soleado"), ("cold", "frío"), ("warm", "cálido"),
    ("windy", "ventoso"), ("cloudy", "nublado"), ("rainy", "lluvioso"),
)
WEATHER_WAS: tuple[tuple[str, str], ...] = (
    ("cold", "hacía frío"), ("warm", "hacía calor"), ("nice", "hacía buen tiempo"), ("windy", "hacía viento"),
)

TRANSITIONS: tuple[tuple[str, str], ...] = (("then", "luego"), ("later", "más tarde"), ("after that", "después"))
MEETS: dict[str, Verb] = {"meet": Verb("met", "meet", "se encontró con"), "see": Verb("saw", "see", "vio a")}
LANDMARKS: dict[str, Noun] = {
    "river": Noun("river", "rivers", "río", "ríos", "m"),
    "bridge": Noun("bridge", "bridges", "puente", "puentes", "m"),
    "fountain": Noun("fountain", "fountains", "fuente", "fuentes", "f"),
    "church": Noun("church", "churches", "iglesia", "iglesias", "f"),
    "lake": Noun("lake", "lakes", "lago", "lagos", "m"),
    "school": Noun("school", "schools", "escuela", "escuelas", "f"),
    "station": Noun("station", "stations", "estación", "estaciones", "f"),
}
LANDMARK_PREPS: tuple[tuple[str, str], ...] = (
    ("near", "cerca de"), ("behind", "detrás de"), ("next to", "junto a"),
)

SEATS: tuple[tuple[str, str], ...] = (
    ("on a bench", "en un banco"), ("under a tree", "debajo de un árbol"), ("on the grass", "en la hierba"),
)
AFTER_SITTING: tuple[tuple[str, str], ...] = (
    ("talked", "hablaron"), ("laughed", "se rieron"), ("rested", "descansaron"),
)
CONTAINERS: tuple[tuple[str, str], ...] = (("basket", "una cesta"), ("bag", "una bolsa"), ("box", "una caja"))
# feeling -> Spanish: "estar" + an agreeing adjective, or "tener" + a fixed noun phrase
FEELINGS: dict[str, Adjective | str] = {
    "tired": _adj("tired", "cansado"), "happy": _adj("happy", "contento"), "hungry": "mucha hambre",
}
BORROWED = _adj("borrowed", "prestado")  # "tomó prestados tres libros"
GO_HOME: tuple[tuple[str, str, str], ...] = (("went", "go", "fueron"), ("ran", "run", "corrieron"))

END_ACTIONS: dict[str, EndAction] = {
    "eat": EndAction(Verb("ate", "eat", "comió"), "with_home"),
    "share": EndAction(Verb("shared", "share", "compartió"), "with"),
    "look": EndAction(Verb("looked at", "look at", "miró"), "with"),
    "cook": EndAction(Verb("cooked", "cook", "cocinó"), "for"),
    "light": EndAction(Verb("lit", "light", "encendió"), "for"),
    "give": EndAction(Verb("gave", "give", "le dio"), "to"),
    "show": EndAction(Verb("showed", "show", "le mostró"), "to"),
    "vase": EndAction(Verb("put", "put", "puso"), "vase"),
}
RETURN = "return"  # ending "went back to the <place> with <companion>"
END_TIMES: dict[str, str] = {"in the evening": "por la noche", "that evening": "esa noche",
                             "later that day": "más tarde ese día"}
RETURN_TIMES: dict[str, str] = {"the next day": "al día siguiente", "the next morning": "a la mañana siguiente"}

# words only the templates and questions use (everything else comes from the tables above)
TEMPLATE_WORDS = frozenset(
    """a an the to at in on of near with for and very it was were day weather they them
    then later after that home together back went go next early much liked like carried carry
    sat sit talked laughed rested put vase
    what who where when how many color kind did feel""".split()
)
# closed-class words; everything else the grammar emits is a content word
FUNCTION_WORDS = frozenset(
    """a an the to at in on of near behind with for and very it was were they them then after that
    she he her him his what who where when how many did much""".split()
)

_ES_DEF = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}
_ES_INDEF = {("m", False): "un", ("f", False): "una", ("m", True): "unos", ("f", True): "unas"}


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
        article = _ES_DEF[(noun.gender, plural)]
    elif det == "a":
        article = _ES_INDEF[(noun.gender, plural)]
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
    questions = [
        QA(_ask("where did", cast.name, move.en_base), " ".join(["to", *place_en])),
        QA(_ask("who", move.en_past, "to", *place_en), cast.name),
        QA(_ask("when did", cast.name, move.en_base, "to", *place_en), when_en),
    ]
    return _Draft(en, es, [cast.name, place_en[-1]], questions, "opening")


def _weather(cast: _Cast, rng: random.Random) -> _Draft:
    """ "It was a sunny day." / "The weather was cold." """
    if rng.random() < 0.6:
        en_w, es_w = rng.choice(WEATHER_DAY)
        en, es = _words("it was", _a_or_an(en_w), en_w, "day"), _words("era un día", es_w)
        qa = QA("What kind of day was it?", f"{_a_or_an(en_w)} {en_w} day")
    else:
        en_w, es_w = rng.choice(WEATHER_WAS)
        en, es = _words("the weather was", en_w), _words(es_w)
        qa = QA("How was the weather?", en_w)
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
    questions = [QA(_ask("what did", subj_en, verb.en_base), " ".join(obj_en))]
    if rng.random() < 0.3:
        place_en, place_es = _the_place(cast.place)
        en = [place.en_at, *place_en, ",", *en]
        es = ["en", *place_es, ",", *es]
        questions.append(QA(_ask("where did", subj_en, verb.en_base, "the", noun_en),
                            " ".join([place.en_at, *place_en])))
    if cast.plural:
        questions.append(QA(_ask("how many", noun_en, "did", subj_en, verb.en_base), cast.quantity))
    if ADJECTIVES[cast.adjective].color:
        be = "were" if cast.plural else "was"
        questions.append(QA(_ask("what color", be, "the", noun_en), cast.adjective))
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
    questions = [
        QA(_ask("who did", subj_en, verb.en_base), cast.companion),
        QA(_ask("where did", subj_en, verb.en_base, cast.companion), " ".join(where_en)),
    ]
    return _Draft(en, es, [cast.companion, mark.en], questions, "meet")


def _sit(cast: _Cast, rng: random.Random) -> _Draft:
    """ "They sat on a bench and talked." """
    seat_en, seat_es = rng.choice(SEATS)
    then_en, then_es = rng.choice(AFTER_SITTING)
    en = _words("they sat", seat_en, "and", then_en)
    es = _words(_they(cast), "se sentaron", seat_es, "y", then_es)
    return _Draft(en, es, [], [QA("Where did they sit?", seat_en)], "sit")


def _carry(cast: _Cast, rng: random.Random) -> _Draft:
    """ "Tom carried the apples in a basket." """
    box_en, box_es = rng.choice(CONTAINERS)
    thing = THINGS[cast.thing]
    obj_en = _en_np("the", thing, cast.plural, None)
    en = [cast.companion, "carried", *obj_en, "in", "a", box_en]
    es = [cast.companion, "llevó", *_es_np("the", thing.noun, cast.plural, None), "en", *_words(box_es)]
    questions = [
        QA(_ask("who carried", *obj_en), cast.companion),
        QA(_ask("what did", cast.companion, "carry", *obj_en, "in"), f"a {box_en}"),
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
    questions = [QA(_ask("what", be_en, *obj_en, "like"), f"very {adjective}")]
    return _Draft(en, es, [obj_en[-1]], questions, "describe")


def _like(cast: _Cast, rng: random.Random) -> _Draft:
    """ "Tom liked the apples very much." — Spanish *gustar* agrees with the object. """
    thing = THINGS[cast.thing]
    obj_en = _en_np("the", thing, cast.plural, None)
    en = [cast.companion, "liked", *obj_en, "very", "much"]
    es = ["a", cast.companion, "le", "gustaron" if cast.plural else "gustó", "mucho",
          *_es_np("the", thing.noun, cast.plural, None)]
    questions = [QA(_ask("what did", cast.companion, "like"), " ".join(obj_en))]
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
    return _Draft(en, es, keywords, [QA(_ask("how did", subj_en, "feel"), f"very {feeling}")], "feel")


def _go_home(cast: _Cast, rng: random.Random) -> _Draft:
    """ "They went home together." """
    verb_en, base, verb_es = rng.choice(GO_HOME)
    together = "juntas" if cast.group_gender == "f" else "juntos"
    en = ["they", verb_en, "home", "together"]
    es = [_they(cast), verb_es, together, "a", "casa"]
    return _Draft(en, es, [], [QA(_ask("where did they", base, "together"), "home")], "home")


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
    name, friend = cast.name, cast.companion
    if plan.action == RETURN:
        place_en, place_es = _the_place(cast.place)
        when_es = RETURN_TIMES[plan.time]
        en = [*_words(plan.time), ",", name, "went", "back", "to", *place_en, "with", friend]
        es = [*_words(when_es), ",", name, "volvió", "a", *place_es, "con", friend]
        questions = [
            QA(_ask("where did", name, "go back to"), " ".join(place_en)),
            QA(_ask("who did", name, "go back with"), friend),
            QA(_ask("when did", name, "go back to", *place_en), plan.time),
        ]
        return _Draft(en, es, [name, place_en[-1], friend], questions, "ending")

    action = END_ACTIONS[plan.action]
    verb, thing = action.verb, THINGS[cast.thing]
    adjective = cast.adjective if plan.with_adjective else None
    obj_en = _en_np("the", thing, cast.plural, adjective)
    obj_es = _es_np("the", thing.noun, cast.plural, adjective)
    head_en = [*_words(plan.time), ",", name, *_words(verb.en_past), *obj_en]
    head_es = [*_words(END_TIMES[plan.time]), ",", name, *_words(verb.es), *obj_es]
    obj = " ".join(obj_en)
    questions = [QA(_ask("what did", name, verb.en_base), obj)]
    if action.frame == "vase":
        en, es = [*head_en, "in", "a", "vase"], [*head_es, "en", "un", "jarrón"]
        questions = [QA(_ask("where did", name, "put", obj), "in a vase")]
    elif action.frame == "to":
        en, es = [*head_en, "to", friend], [*head_es, "a", friend]
        questions = [QA(_ask("what did", name, verb.en_base, "to", friend), obj),
                     QA(_ask("who did", name, verb.en_base, obj, "to"), friend)]
    else:
        prep_en, prep_es = ("for", "para") if action.frame == "for" else ("with", "con")
        en, es = [*head_en, prep_en, friend], [*head_es, prep_es, friend]
        if action.frame == "with_home":
            en, es = [*en, "at", "home"], [*es, "en", "casa"]
        questions.append(QA(_ask("who did", name, verb.en_base, obj, prep_en), friend))
    questions.append(QA(_ask("when did", name, verb.en_base, obj), plan.time))
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


# ---------------------------------------------------------------------------------- story cloze


def _other_name(gender: str, avoid: tuple[str, ...], rng: random.Random) -> str:
    return rng.choice(tuple(n for n in NAMES[gender] if n not in avoid))


def _perturbed_ending(cast: _Cast, plan: _EndingPlan, rng: random.Random) -> tuple[str, str]:
    """An ending of the same shape that contradicts the story by one entity: (kind, text)."""
    fitting = tuple(t for t in THINGS if t != cast.thing and plan.action in THINGS[t].uses)
    mentions_companion = plan.action == RETURN or END_ACTIONS[plan.action].frame != "vase"
    options = ["name"] + (["companion"] if mentions_companion else [])
    options += ["place"] if plan.action == RETURN else ["object"] if fitting else []
    kind = rng.choice(options)
    people = (cast.name, cast.companion)
    if kind == "name":
        wrong = dataclasses.replace(cast, name=_other_name(cast.gender, people, rng))
    elif kind == "companion":
        wrong = dataclasses.replace(cast, companion=_other_name(cast.companion_gender, people, rng))
    elif kind == "place":
        wrong = dataclasses.replace(cast, place=rng.choice(tuple(p for p in PLACES if p != cast.place)))
    else:
        same_adj = tuple(t for t in fitting if cast.adjective in THINGS[t].adjectives)
        thing = rng.choice(same_adj or fitting)
        adjective = cast.adjective if thing in same_adj else rng.choice(THINGS[thing].adjectives)
        wrong = dataclasses.replace(cast, thing=thing, adjective=adjective)
    return kind, _finish(_ending(wrong, plan)).text


def _unrelated_story(i: int, stories: list[Story], rng: random.Random) -> Story | None:
    """Another story sharing no person, object or place with story ``i`` (else any other ending)."""
    me = stories[i].entities
    ending = stories[i].sentences[-1].text
    others = [s for j, s in enumerate(stories) if j != i and s.sentences[-1].text != ending]
    unrelated = [
        s for s in others
        if not {s.entities["name"], s.entities["companion"]} & {me["name"], me["companion"]}
        and s.entities["object"] != me["object"] and s.entities["place"] != me["place"]
    ]
    pool = unrelated or others
    return rng.choice(pool) if pool else None


def story_cloze_pairs(
    stories: list[Story], seed: int, kinds: tuple[str, ...] = ("ssc", "tsc")
) -> list[ClozePair]:
    """Story-cloze items: for each story (in order) one per kind.

    ``ssc``: the true ending vs the same ending with the protagonist, companion, object or place
    swapped (fluent, generated by the same production, but contradicting the context).
    ``tsc``: the true ending vs the ending of an unrelated story from ``stories``.
    """
    rng = random.Random(seed)
    pairs: list[ClozePair] = []
    for i, story in enumerate(stories):
        context = tuple(s.text for s in story.sentences[:-1])
        correct = story.sentences[-1].text
        if "ssc" in kinds:
            cast, plan = _cast_from_entities(story.entities)
            kind, wrong = _perturbed_ending(cast, plan, rng)
            pairs.append(ClozePair(context, correct, wrong, "ssc", story.id, story.id, kind))
        if "tsc" in kinds:
            other = _unrelated_story(i, stories, rng)
            if other is not None:
                pairs.append(ClozePair(context, correct, other.sentences[-1].text, "tsc", story.id, other.id))
    return pairs


# ----------------------------------------------------------------------------------------- BLiMP

BLIMP_PHENOMENA = (
    "subject_verb_agreement",  # "They were very tired." / "They was very tired."
    "verb_form",  # "Anna walked to the market." / "Anna walk to the market."
    "determiner_noun_agreement",  # "She bought a red apple." / "She bought a red apples."
    "a_an",  # "She bought an old book." / "She bought a old book."
    "pronoun_case",  # "She bought three red apples." / "Her bought three red apples."
    "word_order",  # "She bought three red apples." / "She bought three apples red."
)


def _swap(tokens: list[str], i: int, j: int) -> list[str]:
    out = list(tokens)
    out[i], out[j] = out[j], out[i]
    return out


def _replace(tokens: list[str], i: int, word: str) -> list[str]:
    return tokens[:i] + [word] + tokens[i + 1:]


def _blimp_tokens(phenomenon: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """A grammatical sentence from the story productions and its one-point perturbation."""
    cast = _random_cast(rng)
    if phenomenon == "subject_verb_agreement":
        good = rng.choice((_feel, _describe, _weather))(cast, rng).en
        i = good.index("was") if "was" in good else good.index("were")
        return good, _replace(good, i, "were" if good[i] == "was" else "was")
    if phenomenon == "verb_form":
        if rng.random() < 0.5:
            move = MOVES[rng.choice(tuple(MOVES))][0]
            good = [cast.name, move.en_past, "to", *_the_place(cast.place)[0]]
            return good, _replace(good, 1, move.en_base)
        good = _acquire(cast, rng).en
        verb = ACQUIRE[PLACES[cast.place].acquire]
        return good, _replace(good, good.index(verb.en_past), verb.en_base)
    if phenomenon == "a_an":
        cast = dataclasses.replace(cast, quantity="a")
    if phenomenon == "pronoun_case" and rng.random() < 0.4:
        good = (_sit(cast, rng) if rng.random() < 0.5 else _go_home(cast, rng)).en
        return good, _replace(good, 0, "them")
    good = _acquire(cast, rng).en
    offset = good.index(",") + 1 if "," in good else 0  # skip "At the market ,"
    subj, det, adj, noun = offset, offset + 2, offset + 3, offset + 4
    if phenomenon == "pronoun_case":
        return good, _replace(good, subj, PRONOUNS[cast.gender][1])
    if phenomenon == "word_order":
        return good, _swap(good, adj, noun)
    if phenomenon == "a_an":
        return good, _replace(good, det, "an" if good[det] == "a" else "a")
    thing = THINGS[cast.thing]  # determiner_noun_agreement: flip the noun's number
    return good, _replace(good, noun, thing.noun.en_form(not cast.plural))


def blimp_pairs(n: int, seed: int) -> list[BlimpPair]:
    """Up to ``n`` distinct (grammatical, ungrammatical) pairs, phenomena in turn.

    A phenomenon whose distinct pairs run out (200 draws in a row without a new one) leaves the
    rotation, so the count is balanced while every phenomenon has pairs left.
    """
    rng = random.Random(seed)
    pairs: list[BlimpPair] = []
    seen: set[str] = set()
    active = list(BLIMP_PHENOMENA)
    turn = 0
    while len(pairs) < n and active:
        phenomenon = active[turn % len(active)]
        for _ in range(200):
            good, bad = _blimp_tokens(phenomenon, rng)
            pair = BlimpPair(_join(good), _join(bad), phenomenon)
            if pair.bad not in seen:
                seen.add(pair.bad)
                pairs.append(pair)
                turn += 1
                break
        else:
            active.remove(phenomenon)
    return pairs


# ---------------------------------------------------------------------------------------- WUGGY

_DIGRAPHS = ("tch", "th", "sh", "ch", "ph", "wh", "gh", "ck", "ng", "qu")
_VOWEL_TEAMS = ("ee", "ea", "oo", "ou", "ow", "ai", "ay", "oa", "ie", "ei", "ue", "ui", "au", "aw", "ew", "oy",
                "oi", "ey")
_SWAPPABLE_TEAMS = ("ee", "oo", "ai", "oa")  # distinct sounds (ee/ea would sound the same)
_VOWELS = tuple("aeiou")
_CONSONANTS = tuple("bdfgklmnprstv")  # simple single-letter consonants (no c, h, j, q, w, x, y, z)
_STOPS = (tuple("ptk"), tuple("bdg"))  # in a cluster a stop only becomes a stop of the same voicing
_LIQUIDS = ("l", "r")
_BEFORE_LIQUID = ("b", "c", "f", "g", "k", "p")  # bl/br, cl/cr, fl/fr …: both liquids are legal
_DOUBLES = tuple(c + c for c in "bdfglmnpst")
_FINAL_DOUBLES = ("ff", "ll", "ss")  # the only doubles English words end in


def _graphemes(word: str) -> list[str]:
    """Split a word into units: digraphs, vowel teams, doubled consonants, single letters."""
    units: list[str] = []
    i = 0
    while i < len(word):
        for unit in (*_DIGRAPHS, *_VOWEL_TEAMS):
            if word.startswith(unit, i):
                break
        else:
            unit = word[i:i + 2] if word[i:i + 2] in _DOUBLES else word[i]
        units.append(unit)
        i += len(unit)
    return units


def _is_vowel(unit: str | None) -> bool:
    return unit is not None and (unit in _VOWELS or unit in _VOWEL_TEAMS)


def _is_vowel_or_edge(unit: str | None) -> bool:
    return unit is None or _is_vowel(unit)


def _substitutes(units: list[str], k: int) -> tuple[str, ...]:
    """Pronounceable replacements for unit ``k`` (empty when it must stay)."""
    unit = units[k]
    prev = units[k - 1] if k > 0 else None
    nxt = units[k + 1] if k + 1 < len(units) else None
    if unit in _SWAPPABLE_TEAMS:
        return tuple(t for t in _SWAPPABLE_TEAMS if t != unit)
    if unit in _DOUBLES:
        return tuple(d for d in (_DOUBLES if nxt is not None else _FINAL_DOUBLES) if d != unit)
    if unit in _VOWELS:
        if unit == "e" and nxt is None and prev is not None:  # silent final e
            return ()
        if _is_vowel(prev) or _is_vowel(nxt):
            return ()  # two vowels in a row (station, idea): changing one makes odd hiatus
        return tuple(v for v in _VOWELS if v != unit)
    if unit not in _CONSONANTS:
        return ()
    if _is_vowel_or_edge(prev) and _is_vowel_or_edge(nxt):  # a consonant between vowels: any simple one
        pool = _CONSONANTS if nxt is not None else tuple(c for c in _CONSONANTS if c != "v")
        return tuple(c for c in pool if c != unit)
    for stops in _STOPS:  # inside a cluster: keep the cluster's shape (no "tl", "dl")
        if unit in stops:
            return tuple(c for c in stops if c != unit and not (nxt == "l" and c in "td"))
    if unit in _LIQUIDS and (_is_vowel(prev) or prev in _BEFORE_LIQUID):
        return tuple(c for c in _LIQUIDS if c != unit)
    return ()


def _nonword(word: str, rng: random.Random, n_changes: int) -> str:
    units = _graphemes(word)
    positions = [k for k in range(len(units)) if _substitutes(units, k)]
    if not positions:
        return word
    for k in rng.sample(positions, min(n_changes, len(positions))):
        units[k] = rng.choice(_substitutes(units, k))
    return "".join(units)


@lru_cache(maxsize=1)
def _known_english_words() -> frozenset[str]:
    """Words of the CMU dictionary shipped with pocketsphinx (a dependency); empty if it is absent.

    Keeps a non-word from being a real English word outside our vocabulary ("market" → "marker").
    """
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "en-us" / "cmudict-en-us.dict"
    if not path.is_file():
        return frozenset()
    with path.open(encoding="utf-8", errors="replace") as f:
        return frozenset(re.sub(r"\(\d+\)$", "", line.split(" ", 1)[0]) for line in f if line.strip())


def _wuggy_words() -> list[str]:
    """Real words used for sWUGGY: content words of 4+ letters (names excluded), sorted."""
    return sorted(w for w in english_content_words() if len(w) >= 4 and w.isalpha())


def wuggy_pairs(n: int, seed: int) -> list[WuggyPair]:
    """Up to ``n`` (word, non-word) pairs; the non-word changes one or two graphemes of the word.

    Changes keep the syllable shape (a consonant between vowels → another simple consonant; inside
    a cluster a stop → a stop of the same voicing, l ↔ r; a vowel → another vowel; a doubled
    consonant or vowel team → another one), so the non-word is pronounceable by an English TTS.
    A non-word is never in :func:`vocabulary`, never a word of the CMU dictionary and never
    repeated. Words are taken in a seeded shuffle, cycling when ``n`` exceeds their number.
    """
    rng = random.Random(seed)
    words = _wuggy_words()
    rng.shuffle(words)
    forbidden = _vocabulary() | _known_english_words()
    pairs: list[WuggyPair] = []
    used: set[str] = set()
    stale_rounds = 0
    while len(pairs) < n and stale_rounds < 3:
        before = len(pairs)
        for word in words:
            if len(pairs) >= n:
                break
            for _ in range(20):
                fake = _nonword(word, rng, 1 if len(word) < 7 else rng.choice((1, 2)))
                if fake != word and fake not in forbidden and fake not in used:
                    used.add(fake)
                    pairs.append(WuggyPair(word, fake))
                    break
        stale_rounds = stale_rounds + 1 if len(pairs) == before else 0
    return pairs
