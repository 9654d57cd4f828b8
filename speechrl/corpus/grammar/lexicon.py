"""The grammar's bilingual lexicon: word types (nouns, adjectives, verbs, things, places) and the tables
every production draws from, in a fixed order (so a seed gives the same choices)."""

from __future__ import annotations

from dataclasses import dataclass

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

# Spanish articles by (gender, plural)
ES_DEFINITE = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}
ES_INDEFINITE = {("m", False): "un", ("f", False): "una", ("m", True): "unos", ("f", True): "unas"}
