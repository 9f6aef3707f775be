"""Tweet normalisation: one definition, applied by training, export, the service and the scorer.

A bundle names the preprocessing its model was trained with in `config.json`
(`"preprocess": "tweet-1"`); every reader of that bundle applies exactly the function registered
under that name, so the text a model sees at serving time is the text it saw in training. A
bundle without the field reads text as given. A rule change is a new name (`tweet-2`), never an
edit of `tweet-1`: shipped bundles keep the rules they were trained with.

`tweet-1`, in order:
1. HTML entities unescaped (tweets arrive with `&amp;`, `&lt;3`, sometimes escaped twice);
2. URLs -> `http` and @mentions -> `@user` (53 % / 41 % of SemEval-2017's test tweets carry
   them; they cost tokens and carry no sentiment);
3. emoji -> their English names (`😭` -> ` loudly crying face `): the uncased WordPiece vocabulary
   reads every emoji as `[UNK]`;
4. invisible characters dropped (control and format characters, zero-width joiners, variation
   selectors, lone surrogates), whitespace collapsed.
The entity of an entity-pair model is never rewritten: it names a brand, not a tweet.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import emoji

TWEET_1 = "tweet-1"

_URL = re.compile(r"(?:https?://|www\.)\S*", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
# C0/C1 controls other than whitespace, zero-width and bidi marks, word joiners, variation
# selectors, the BOM, and lone surrogates (JSON can carry "\ud800"; UTF-8 cannot encode it).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\ufe00-\ufe0f\ufeff\ud800-\udfff]"
)
# Runs of the non-ASCII characters emoji are made of: the emoji package's matcher walks every
# character in Python, so it only sees these runs (a tweet costs microseconds, not tens of them).


def _emoji_class() -> str:
    """A regex class of every non-ASCII code point in an emoji, as ranges (1,448 points in 158
    ranges with emoji 2.16: a per-character class would cost ~4 us per character to scan)."""
    ranges: list[list[int]] = []
    for point in sorted({ord(c) for key in emoji.EMOJI_DATA for c in key if ord(c) > 127}):
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


_EMOJI_RUN = re.compile(f"[{_emoji_class()}]+")
_SPACE = re.compile(r"\s+")
_PASSES = 3  # entities that spell entities ("&amp;lt;"), emoji or invisibles: bounded unescaping


def _emoji_name(chars: str, data: dict[str, str]) -> str:
    name = data.get("en", "").strip(":").replace("_", " ")
    return f" {name} "


def _words(run: re.Match[str]) -> str:
    return emoji.replace_emoji(run.group(0), replace=_emoji_name)


def _symbols(text: str) -> str:
    """Emoji to words, then invisible characters out (after: joiners hold emoji together)."""
    if text.isascii():
        return text if text.isprintable() else _INVISIBLE.sub("", text)
    return _INVISIBLE.sub("", _EMOJI_RUN.sub(_words, text))


def normalise_tweet(text: str) -> str:
    """`tweet-1`: see the module docstring. Idempotent, except on text whose HTML entities
    spell further entities more than three levels deep."""
    for _ in range(_PASSES):
        text = _symbols(text)
        if "&" not in text:
            break
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    else:
        text = _symbols(text)
    text = _MENTION.sub("@user", _URL.sub("http", text))
    return _SPACE.sub(" ", text).strip()


PREPROCESSORS: dict[str, Callable[[str], str]] = {TWEET_1: normalise_tweet}


def preprocessor(name: str | None) -> Callable[[str], str] | None:
    """The function a bundle's `preprocess` names; None (no field) reads text as given."""
    if name is None:
        return None
    try:
        return PREPROCESSORS[name]
    except KeyError:
        raise ValueError(
            f"unknown preprocess {name!r} (this version knows: {', '.join(PREPROCESSORS)})"
        ) from None
