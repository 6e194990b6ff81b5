"""Event names: split them into words, tell a past-tense fact from a command, and suggest a better name.

The guide's rule: an event is named after something that *happened*, dot-separated and in the past tense::

    user.created   order.placed   payment.processed   inventory.updated      good
    user_event     do_something   create_user         update_order          bad (vague or imperative)

>>> check_event_name("create_user").suggestion
'user.created'
>>> check_event_name("update_order").suggestion
'order.updated'
>>> check_event_name("user.created") is None
True
>>> past_participle("send"), past_participle("ship"), past_participle("modify")
('sent', 'shipped', 'modified')

English is irregular, so this module only judges what it can recognise: a known verb at the start
(``create_user``) or at the end (``user.create``) of a name, a past participle at the end
(``order.placed``), or a vague word such as ``event`` with no verb at all (``user_event``). A name it
cannot read (``rpc_queue``, ``heartbeat``) is left alone: silence beats noise in a linter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

#: Irregular past participles. Events are facts, so the participle ("written") is what reads well after
#: the subject ("file.written"); the simple past is accepted too (see :data:`_IRREGULAR_PAST`).
IRREGULAR: dict[str, str] = {
    "arise": "arisen",
    "be": "been",
    "bear": "borne",
    "become": "become",
    "begin": "begun",
    "bend": "bent",
    "bet": "bet",
    "bid": "bid",
    "bind": "bound",
    "bite": "bitten",
    "break": "broken",
    "bring": "brought",
    "broadcast": "broadcast",
    "build": "built",
    "burst": "burst",
    "buy": "bought",
    "cast": "cast",
    "catch": "caught",
    "choose": "chosen",
    "come": "come",
    "cost": "cost",
    "cut": "cut",
    "deal": "dealt",
    "dig": "dug",
    "do": "done",
    "draw": "drawn",
    "drive": "driven",
    "eat": "eaten",
    "fall": "fallen",
    "feed": "fed",
    "feel": "felt",
    "fight": "fought",
    "find": "found",
    "flee": "fled",
    "fly": "flown",
    "forbid": "forbidden",
    "forget": "forgotten",
    "forgive": "forgiven",
    "freeze": "frozen",
    "get": "got",
    "give": "given",
    "go": "gone",
    "grow": "grown",
    "hang": "hung",
    "have": "had",
    "hear": "heard",
    "hide": "hidden",
    "hit": "hit",
    "hold": "held",
    "hurt": "hurt",
    "input": "input",
    "keep": "kept",
    "know": "known",
    "lay": "laid",
    "lead": "led",
    "leave": "left",
    "lend": "lent",
    "let": "let",
    "light": "lit",
    "lose": "lost",
    "make": "made",
    "mean": "meant",
    "meet": "met",
    "output": "output",
    "overwrite": "overwritten",
    "override": "overridden",
    "pay": "paid",
    "prepay": "prepaid",
    "put": "put",
    "quit": "quit",
    "read": "read",
    "rebuild": "rebuilt",
    "redo": "redone",
    "repay": "repaid",
    "resend": "resent",
    "reset": "reset",
    "rewrite": "rewritten",
    "ride": "ridden",
    "ring": "rung",
    "rise": "risen",
    "run": "run",
    "say": "said",
    "see": "seen",
    "seek": "sought",
    "sell": "sold",
    "send": "sent",
    "set": "set",
    "shake": "shaken",
    "shoot": "shot",
    "show": "shown",
    "shrink": "shrunk",
    "shut": "shut",
    "sing": "sung",
    "sink": "sunk",
    "sleep": "slept",
    "slide": "slid",
    "speak": "spoken",
    "spend": "spent",
    "spin": "spun",
    "split": "split",
    "spread": "spread",
    "stand": "stood",
    "steal": "stolen",
    "stick": "stuck",
    "strike": "struck",
    "swear": "sworn",
    "sweep": "swept",
    "swim": "swum",
    "swing": "swung",
    "take": "taken",
    "teach": "taught",
    "tear": "torn",
    "tell": "told",
    "think": "thought",
    "throw": "thrown",
    "undo": "undone",
    "understand": "understood",
    "upset": "upset",
    "wake": "woken",
    "wear": "worn",
    "win": "won",
    "withdraw": "withdrawn",
    "withhold": "withheld",
    "write": "written",
}

#: Simple pasts that differ from the participle ("began" / "begun"): also facts, also accepted.
_IRREGULAR_PAST = frozenset(
    {
        "arose", "ate", "became", "began", "bit", "broke", "came", "chose", "did", "drew", "drove", "fell",
        "flew", "forgot", "forgave", "froze", "gave", "got", "grew", "hid", "knew", "overrode", "rang",
        "redid", "rewrote", "rode", "rose", "ran", "sang", "sank", "saw", "shook", "showed", "shrank", "spoke",
        "stole", "swam", "swore", "threw", "took", "tore", "undid", "withdrew", "woke", "wore", "wrote",
    }
)  # fmt: skip

PAST_FORMS = frozenset(IRREGULAR.values()) | _IRREGULAR_PAST

#: Two-syllable verbs stressed on the last syllable double their final consonant ("submitted").
_DOUBLING = frozenset(
    {
        "admit", "commit", "compel", "control", "emit", "equip", "expel", "forget", "occur", "omit", "patrol",
        "permit", "prefer", "propel", "recur", "refer", "regret", "submit", "transfer", "transmit", "unpin",
        "unzip", "unwrap",
    }
)  # fmt: skip

#: Words ending in "ed" that are not past tenses.
_NOT_PAST = frozenset({"bed", "breed", "embed", "feed", "need", "red", "seed", "shed", "speed", "weed", "shred"})

#: Irregular verbs whose base form is more often a noun in a name ("tv_show", "street_light",
#: "news_feed"): they never make a name a command.
_NOUNISH = frozenset(
    {
        "be", "bear", "become", "bite", "break", "come", "deal", "dig", "draw", "drive", "eat", "feed", "feel",
        "fight", "flee", "fly", "hang", "have", "input", "know", "lead", "light", "mean", "output", "ride",
        "ring", "shake", "shoot", "show", "sing", "sink", "slide", "steal", "stick", "strike", "swear", "swim",
        "swing", "teach", "tear", "think", "wear",
    }
)  # fmt: skip

#: Verbs met at the start ("create_user") or end ("user.create") of event and message names. Words that
#: are more often nouns in names (order, record, comment, post, message, test, book, queue, log, store,
#: flag, link, plan, schedule, transfer...) are left out on purpose: "order_items" is not a command.
VERBS = (frozenset(IRREGULAR) - _NOUNISH) | frozenset(
    {
        "accept", "acknowledge", "activate", "add", "adjust", "allocate", "amend", "append", "apply", "approve",
        "archive", "assign", "attach", "authenticate", "authorize", "authorise", "ban", "calculate", "cancel",
        "change", "clear", "close", "collect", "complete", "compute", "confirm", "connect", "convert", "copy",
        "create", "deactivate", "decline", "decrement", "delete", "deliver", "deny", "deploy", "destroy",
        "detach", "dim", "disable", "disconnect", "dispatch", "download", "drop", "edit", "emit", "enable",
        "end", "enqueue", "enroll", "ensure", "erase", "escalate", "evaluate", "execute", "expire", "export",
        "fetch", "finish", "fix", "flush", "follow", "fulfil", "fulfill", "generate", "grant", "handle",
        "import", "increment", "initiate", "insert", "install", "invite", "invoke", "join", "kill", "launch",
        "like", "lock", "login", "logout", "merge", "migrate", "modify", "move", "notify", "open", "place",
        "process", "provision", "publish", "purge", "push", "receive", "redeem", "refresh", "refund",
        "register", "reject", "reload", "remove", "rename", "renew", "reopen", "replace", "request", "reserve",
        "resolve", "restart", "restore", "resume", "retry", "revoke", "save", "ship", "start", "stop", "submit",
        "subscribe", "suspend", "sync", "terminate", "toggle", "trigger", "turn", "unarchive", "unassign",
        "unblock", "unfollow", "uninstall", "unlike", "unlink", "unlock", "unpublish", "unregister",
        "unsubscribe", "update", "upgrade", "upload", "upsert", "validate", "verify", "void", "withdraw",
    }
)  # fmt: skip

#: Words that say "an event" without saying what happened.
VAGUE = frozenset({"event", "events", "message", "messages", "msg", "notification", "notifications", "data", "info"})

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_VERSION = re.compile(r"^v?\d+$")
_PARAM = re.compile(r"^\{[^{}]*\}$")
_VOWELS = "aeiou"

Style = Literal["dotted", "snake", "kebab", "camel", "pascal", "single"]


def past_participle(verb: str) -> str:
    """``create`` -> ``created``, ``send`` -> ``sent``, ``ship`` -> ``shipped``, ``modify`` -> ``modified``."""
    word = verb.lower()
    if word in IRREGULAR:
        return IRREGULAR[word]
    for prefix in ("re", "un", "pre"):
        # "resend" -> "resent", "unbind" -> "unbound": the prefix keeps the stem's irregular form
        if word.startswith(prefix) and word[len(prefix) :] in IRREGULAR and len(word) > len(prefix) + 2:
            return prefix + IRREGULAR[word[len(prefix) :]]
    if word.endswith("e"):
        return word + "d"
    if word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        return word[:-1] + "ied"
    if word in _DOUBLING or _doubles(word):
        return word + word[-1] + "ed"
    return word + "ed"


def _doubles(word: str) -> bool:
    """One-syllable consonant-vowel-consonant verbs double the last letter: stop, ship, plan, dim, tag."""
    if len(word) < 3 or word[-1] in _VOWELS + "wxy":
        return False
    if word[-2] not in _VOWELS or word[-3] in _VOWELS:
        return False
    return sum(1 for i, c in enumerate(word) if c in _VOWELS and (i == 0 or word[i - 1] not in _VOWELS)) == 1


def is_past(word: str) -> bool:
    """Whether ``word`` reads as a past tense or participle: ``created``, ``sent``, ``left``, ``began``."""
    w = word.lower()
    if w in PAST_FORMS:
        return True
    return len(w) > 3 and w.endswith("ed") and w not in _NOT_PAST


def is_verb(word: str) -> bool:
    w = word.lower()
    if w in VERBS:
        return True
    # "reassign", "unpublish", "precompute": a known verb behind a common prefix
    return any(w.startswith(p) and w[len(p) :] in VERBS and len(w) > len(p) + 2 for p in ("re", "un", "pre"))


def words_of(part: str) -> list[str]:
    """Lower-case words of one name segment: ``createUser``, ``create_user``, ``create-user`` -> create, user."""
    out: list[str] = []
    for chunk in re.split(r"[_\-\s]+", part):
        out.extend(w.lower() for w in _CAMEL.findall(chunk))
    return out


def style_of(name: str) -> Style:
    if "." in name:
        return "dotted"
    if "_" in name:
        return "snake"
    if "-" in name:
        return "kebab"
    if re.search(r"[a-z][A-Z]", name):
        return "pascal" if name[:1].isupper() else "camel"
    return "single"


@dataclass(frozen=True, slots=True)
class NameFinding:
    """What is wrong with an event name, and the name we would use instead."""

    #: ``imperative`` (create_user), ``present`` (user.create), ``vague`` (user_event) or ``style``
    #: (user_created: right tense, but not dot-separated)
    kind: Literal["imperative", "present", "vague", "style"]
    message: str
    #: the suggested name; for a vague name, a pattern such as ``user.created``
    suggestion: str


def check_event_name(name: str, *, identifier: bool = False) -> NameFinding | None:
    """Judge one event name; ``None`` when it is fine or when we cannot read it.

    ``identifier=True`` is for message ids, names and keys: code identifiers such as ``UserCreated`` are
    judged on tense only, and a suggestion keeps their case style (``createUser`` -> ``userCreated``).
    Otherwise (event types, channel addresses) the name must also be dot-separated lower case.
    """
    style = style_of(name)
    segments = name.split(".") if style == "dotted" else [name]
    # leading/trailing version segments ("v2", "1.0") and parameters ("{userId}") are not words of the event
    core_idx = [i for i, s in enumerate(segments) if s and not _VERSION.match(s) and not _PARAM.match(s)]
    if not core_idx:
        return None
    last_i = core_idx[-1]
    last_words = words_of(segments[last_i])
    all_words = [w for i in core_idx for w in words_of(segments[i])]
    if len(all_words) < 2 or not last_words:
        return None  # one word ("heartbeat", "ping"): nothing to judge

    def rebuild(new_last_segment_words: list[str]) -> str:
        """``segments`` with the last core segment replaced, written in the expected style."""
        if identifier and style in ("camel", "pascal"):
            text = new_last_segment_words[0] + "".join(w.capitalize() for w in new_last_segment_words[1:])
            return text[:1].upper() + text[1:] if style == "pascal" else text
        if style == "dotted":
            seg = "_".join(new_last_segment_words[:-1])
            parts = [*segments[:last_i], *([seg] if seg else []), new_last_segment_words[-1], *segments[last_i + 1 :]]
            return ".".join(parts)
        return ".".join(["_".join(new_last_segment_words[:-1]), new_last_segment_words[-1]])

    if is_past(last_words[-1]):
        if identifier or (style == "dotted" and name == name.lower() and "_" not in segments[last_i]):
            return None
        if style == "dotted" and name != name.lower():
            better = ".".join(s if _PARAM.match(s) else s.lower() for s in segments)
        else:
            better = rebuild(last_words)
        if better == name:
            return None
        return NameFinding("style", f'event name "{name}" should be dot-separated lower case', better)

    # a command: "create_user", "createUser", "shop.create_order", "create.user": the verb moves to the
    # end, in the past tense
    first_i = core_idx[0]
    first_words = words_of(segments[first_i])
    verb = ""
    if len(last_words) >= 2 and is_verb(last_words[0]) and not is_past(last_words[0]):
        verb = last_words[0]
        better = rebuild([*last_words[1:], past_participle(verb)])
    elif first_i != last_i and is_verb(first_words[0]) and not is_past(first_words[0]):
        verb = first_words[0]
        rest = [*first_words[1:], *[w for i in core_idx[1:] for w in words_of(segments[i])]]
        better = ".".join(["_".join(rest), past_participle(verb)])
    if verb:
        return NameFinding(
            "imperative",
            f'event name "{name}" reads as a command ("{verb}"): name the fact that happened, in the past tense',
            better,
        )
    if is_verb(last_words[-1]):
        verb = last_words[-1]
        better = rebuild([*last_words[:-1], past_participle(verb)])
        return NameFinding(
            "present",
            f'event name "{name}" is not in the past tense ("{verb}"): events are facts that happened',
            better,
        )
    vague = [w for w in all_words if w in VAGUE]
    if vague and not (identifier and style in ("camel", "pascal")):
        subject = "_".join(w for w in all_words if w not in VAGUE) or "entity"
        return NameFinding(
            "vague",
            f'event name "{name}" is vague ("{vague[0]}"): say what happened, e.g. {subject}.created',
            f"{subject}.created",
        )
    return None


__all__ = ["IRREGULAR", "VERBS", "NameFinding", "check_event_name", "is_past", "is_verb", "past_participle", "words_of"]
