"""A compositional task space: tasks built from primitives that combine, so unseen tasks lie between seen ones.

T2L's claim is that the description of a new task lands between descriptions the hypernet was trained on,
and the adapter it makes between their adapters. The hand-written suite (`suite.py`) has 36 unrelated
tasks, nothing to interpolate between. Here every task is one combination of three primitives:

    selector   which of the four input words:     first, second, third, last, the animal
    operation  what to write about that word:     the word, its first letter, its last letter, its spelling,
                                                  its number of letters (digits), its number of letters (a word)
    format     how to write the answer:           plain, twice, three times, after the label "answer:"

e.g. "the first letter of the animal, twice": input `lemon otter candle tulip` -> `o o`. Every task reads
the same kind of input (four words, exactly one an animal), so only the description says what to do.
5 x 6 x 4 = 120 tasks; 20 of them (one per selector and format, no two sharing two primitives) are held
out: each is a combination no training task has, of primitives and pairs of primitives training tasks use.

Descriptions come from templates: sentence frames x synonyms of each primitive, in both orders (selector
first or operation first, the format before or after). Frames and some synonyms are reserved for held-out
wordings, so a held-out description is never a training string and not even a training frame. Every task
has `descriptions_per_task` training-style descriptions and as many held-out ones, drawn with the task's
own seeded stream. `VAGUE` lists generic one-liners ("Solve this task.") that describe no task.

The base model needs the primitives' raw facts (which word of a list is where, spellings, lengths, first and
last letters, number words, which words are animals); `fact_lines` writes them as plain sentences, each about
one primitive, never in a task's format.
`write_space` writes SNI-schema task files, `descriptions.json` and the two task lists, like `write_suite`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from t2l_ray.data.descriptions import TaskDescriptions
from t2l_ray.data.sni import SNITask
from t2l_ray.data.suite import HELD_OUT_LIST, TRAIN_LIST, Suite, _instances, _sni_record

FIRST_TASK_NUMBER = 9101
"""Task numbers above the suite's (9001-9036) and SNI's, so names never collide."""
WORDS_PER_INPUT = 4

# Words of 3 to 8 letters in equal numbers, so that no length (and no length-based answer) dominates.
ANIMALS = ("cat dog fox owl lion duck goat bear tiger eagle shark mouse rabbit donkey parrot turtle giraffe dolphin "
           "penguin lobster elephant kangaroo flamingo hedgehog").split()
OBJECTS = ("cup hat map pen box key jar bag net pot lamp desk door ring coin boat kite drum bell rope apple chair "
           "table river cloud bread stone spoon glass towel candle basket pillow rocket ticket wallet button carpet "
           "bottle pencil blanket lantern cabinet curtain pumpkin compass diamond kitchen balloon hammock umbrella "
           "notebook envelope mushroom sandwich backpack necklace calendar keyboard airplane").split()
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve").split()
VAGUE = (
    "Solve this task.",
    "Do what is asked.",
    "Answer the question.",
    "Complete the task.",
    "Give the right answer.",
    "Respond to the input.",
)
"""Generic one-liners that name no primitive: what T2L makes of a description that says nothing."""


@dataclass(frozen=True)
class Primitive:
    """One value of a family: its key, its phrase in the task Definition, and synonyms for descriptions."""

    key: str
    definition: str
    phrases: tuple[str, ...]
    """Training-style wordings; `{sel}` (operations) is where the selector's phrase goes."""
    held_out_phrases: tuple[str, ...]
    """Wordings used only in held-out descriptions."""
    apply: Callable


def _pick(index: int):
    return lambda words: words[index]


def _animal(words: list[str]) -> str:
    return next(w for w in words if w in ANIMALS)


SELECTORS = (
    Primitive("first", "the first word", ("the first word", "word one", "the opening word", "the word at the start"),
              ("the 1st word", "the leading word"), _pick(0)),
    Primitive("second", "the second word", ("the second word", "word two", "the word in second place",
                                             "the word after the first one"), ("the 2nd word", "word number two"),
              _pick(1)),
    Primitive("third", "the third word", ("the third word", "word three", "the word in third place",
                                           "the word before the last one"), ("the 3rd word", "word number three"),
              _pick(2)),
    Primitive("last", "the last word", ("the last word", "the final word", "word four", "the word at the end"),
              ("the 4th word", "the closing word"), _pick(-1)),
    Primitive("animal", "the animal", ("the animal", "the word that names an animal", "the animal word",
                                       "the creature"), ("the one animal in the list", "the beast"), _animal),
)

# An operation phrase is a noun phrase around `{sel}` (the selector's phrase): "the first letter of {sel}".
OPERATIONS = (
    Primitive("word", "{sel} itself", ("{sel} itself", "{sel} exactly as it is", "{sel} unchanged", "{sel}, copied"),
              ("{sel} as given", "a copy of {sel}"), lambda w: w),
    Primitive("initial", "the first letter of {sel}", ("the first letter of {sel}", "the initial of {sel}",
                                                        "the letter {sel} starts with", "the opening letter of {sel}"),
              ("the starting letter of {sel}", "the 1st letter of {sel}"), lambda w: w[0]),
    Primitive("final", "the last letter of {sel}", ("the last letter of {sel}", "the final letter of {sel}",
                                                     "the letter {sel} ends with", "the closing letter of {sel}"),
              ("the ending letter of {sel}", "the end letter of {sel}"), lambda w: w[-1]),
    Primitive("spell", "the letters of {sel}, separated by spaces", (
        "the spelling of {sel}, letter by letter", "{sel} spelled out", "the letters of {sel} one by one",
        "the letters of {sel}, separated by spaces"), ("{sel} broken into its letters", "each letter of {sel} in turn"),
        lambda w: " ".join(w)),
    Primitive("length", "the number of letters in {sel}, in digits", (
        "the number of letters in {sel}, in digits", "how many letters {sel} has, as a numeral",
        "the length of {sel} as a number", "the letter count of {sel} in figures"),
        ("the size of {sel} in letters, as digits", "the count of letters in {sel}, numerically"),
        lambda w: str(len(w))),
    Primitive("length_word", "the number of letters in {sel}, as a word", (
        "the number of letters in {sel}, spelled as a word", "how many letters {sel} has, in words",
        "the length of {sel} written as a word", "the letter count of {sel} in words"),
        ("the size of {sel} in letters, as a number word", "the count of letters in {sel}, written out"),
        lambda w: NUMBER_WORDS[len(w)]),
)

# A format phrase follows the operation (", twice") or, without its comma, opens the description ("Twice: ...").
FORMATS = (
    Primitive("plain", "", ("", ", and nothing else", ", on its own", ", with no other words"),
              (", just that", ", by itself"), lambda a: a),
    Primitive("twice", ", twice", (", twice", ", two times", ", repeated twice", ", written two times in a row"),
              (", doubled", ", once and then once more"), lambda a: f"{a} {a}"),
    Primitive("thrice", ", three times", (", three times", ", thrice", ", repeated three times",
                                          ", written three times in a row"),
              (", tripled", ", once and then twice more"), lambda a: f"{a} {a} {a}"),
    Primitive("labelled", ", after the label 'answer:'", (
        ", after the label 'answer:'", ", labelled 'answer:'", ", in the form 'answer: ...'", ", preceded by 'answer:'"),
        (", behind the tag 'answer:'", ", prefixed with 'answer:'"), lambda a: f"answer: {a}"),
)

# Frames: {op} is the operation phrase with the selector filled in, {fmt} the format phrase.
TRAIN_FRAMES = (
    "Write {op}{fmt}.",
    "Output {op}{fmt}.",
    "Give {op}{fmt}.",
    "Your answer: {op}{fmt}.",
    "Look at the four words and write {op}{fmt}.",
    "From the list, return {op}{fmt}.",
    "Reply with {op}{fmt}.",
    "Respond with {op}{fmt}.",
)
HELD_OUT_FRAMES = (
    "Please produce {op}{fmt}.",
    "Read the words, then print {op}{fmt}.",
    "The task: {op}{fmt}.",
    "Answer by stating {op}{fmt}.",
)


@dataclass(frozen=True)
class TaskSpec:
    selector: Primitive
    operation: Primitive
    format: Primitive

    @property
    def slug(self) -> str:
        return f"{self.selector.key}_{self.operation.key}_{self.format.key}"

    @property
    def primitives(self) -> tuple[str, str, str]:
        return self.selector.key, self.operation.key, self.format.key

    @property
    def definition(self) -> str:
        op = self.operation.definition.format(sel=self.selector.definition)
        return f"In this task, you are given four words, one of them an animal. Write {op}{self.format.definition}."

    def answer(self, words: list[str]) -> str:
        return self.format.apply(self.operation.apply(self.selector.apply(words)))

    def make(self, rng: random.Random) -> tuple[str, list[str]]:
        """One instance from a random stream: (input, acceptable outputs), as the suite's generators."""
        words = draw_input(rng)
        return " ".join(words), [self.answer(words)]


def all_specs() -> list[TaskSpec]:
    """Every combination, in family order (selector, then operation, then format)."""
    return [TaskSpec(s, o, f) for s, o, f in itertools.product(SELECTORS, OPERATIONS, FORMATS)]


def held_out_specs(seed: int = 0) -> list[TaskSpec]:
    """One held-out combination per (selector, format) pair, its operation from a Latin rectangle
    (`(s + f) mod operations` under seeded relabellings), so no two held-out tasks share two primitives: every
    pair of primitives in a held-out task is also in training tasks. Fixed by `seed`, not by the instance seed."""
    rng = random.Random(f"held-out/{seed}")
    ops = rng.sample(OPERATIONS, len(OPERATIONS))
    shift = rng.sample(range(len(OPERATIONS)), len(SELECTORS))
    return [TaskSpec(selector, ops[(shift[i] + j) % len(ops)], fmt)
            for i, selector in enumerate(SELECTORS) for j, fmt in enumerate(FORMATS)]


def task_name(index: int, spec: TaskSpec) -> str:
    return f"task{FIRST_TASK_NUMBER + index}_{spec.slug}"


def draw_input(rng: random.Random) -> list[str]:
    """Four distinct words, exactly one of them an animal, at a random position."""
    words = rng.sample(OBJECTS, WORDS_PER_INPUT - 1)
    words.insert(rng.randrange(WORDS_PER_INPUT), rng.choice(ANIMALS))
    return words


def describe(spec: TaskSpec, rng: random.Random, held_out: bool) -> str:
    """One description from the training-style (or the held-out) frames and phrases; the format phrase goes
    after the operation, or (three times in ten) first: "Twice: write the initial of word two."."""

    def phrases(primitive: Primitive) -> tuple[str, ...]:
        return primitive.held_out_phrases + primitive.phrases if held_out else primitive.phrases

    frame = rng.choice(HELD_OUT_FRAMES if held_out else TRAIN_FRAMES)
    op = rng.choice(phrases(spec.operation)).format(sel=rng.choice(phrases(spec.selector)))
    fmt = rng.choice(phrases(spec.format))
    if fmt and rng.random() < 0.3:
        text = frame.format(op=op, fmt="")
        return f"{fmt[2].upper()}{fmt[3:]}: {text[0].lower()}{text[1:]}"
    text = frame.format(op=op, fmt=fmt)
    return text[0].upper() + text[1:]


def fact_lines(rng: random.Random) -> list[str]:
    """One draw of the primitives' raw facts, as plain sentences a base model pretrains on: which word of a list
    sits where and which one is the animal (the selectors), a word's letters, length and first and last
    letters (the operations), number words. Never a task's format: no instruction, no chat turn, no format,
    and never a selector and an operation in one sentence."""
    word = rng.choice(OBJECTS + ANIMALS)
    words = draw_input(rng)
    n = rng.randrange(len(NUMBER_WORDS))
    where = rng.choice(SELECTORS)
    return [
        f"in {' '.join(words)}, {where.definition} is {where.apply(words)}.",
        f"{word} is spelled {' '.join(word)}.",
        f"{word} has {len(word)} letters.",
        f"{word} has {NUMBER_WORDS[len(word)]} letters.",
        f"the word {word} starts with {word[0]} and ends with {word[-1]}.",
        f"{n} is written {NUMBER_WORDS[n]}.",
        f"a {rng.choice(ANIMALS)} is an animal. a {rng.choice(OBJECTS)} is not an animal.",
    ]


def descriptions_of(spec: TaskSpec, name: str, count: int, held_out: bool, exclude: set[str] = frozenset()) -> list[str]:
    """`count` distinct descriptions of a task from its own stream (`exclude`: texts it must not repeat)."""
    rng = random.Random(f"{name}/descriptions/{'held_out' if held_out else 'train'}")
    found: list[str] = []
    for _ in range(count * 200):
        text = describe(spec, rng, held_out)
        if text not in found and text not in exclude:
            found.append(text)
        if len(found) == count:
            return found
    raise ValueError(f"{name}: only {len(found)} distinct descriptions, {count} asked")


def build_space(seed: int = 0, instances_per_task: int = 100, descriptions_per_task: int = 24) -> Suite:
    """Training and held-out tasks with their instances and descriptions (same seed, same space)."""
    if instances_per_task < 1 or descriptions_per_task < 1:
        raise ValueError("instances_per_task and descriptions_per_task must be at least 1")
    held = {spec.slug for spec in held_out_specs()}
    train, held_out = [], []
    descriptions = TaskDescriptions()
    for index, spec in enumerate(all_specs()):
        name = task_name(index, spec)
        task = SNITask(name=name, definition=spec.definition, instances=_instances(spec, name, seed, instances_per_task),
                       categories=["Compositional"], source_file=f"{name}.json")
        (held_out if spec.slug in held else train).append(task)
        descriptions.train[name] = descriptions_of(spec, name, descriptions_per_task, held_out=False)
        descriptions.held_out[name] = descriptions_of(spec, name, descriptions_per_task, held_out=True,
                                                      exclude=set(descriptions.train[name]))
    return Suite(seed=seed, train=train, held_out=held_out, descriptions=descriptions)


def write_space(out_dir: str | Path, seed: int = 0, instances_per_task: int = 100,
                descriptions_per_task: int = 24) -> Suite:
    """Write the space as SNI-schema task files, `descriptions.json` (shared layout) and the two task lists;
    returns it with `source_file` pointing at the written files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = build_space(seed, instances_per_task, descriptions_per_task)
    specs = {task_name(index, spec): spec for index, spec in enumerate(all_specs())}
    held = {task.name for task in space.held_out}

    def write(task: SNITask) -> SNITask:
        path = out / f"{task.name}.json"
        record = {**_sni_record(specs[task.name], task, seed), "Contributors": ["t2l-ray task space"],
                  "Source": ["t2l_ray.data.taskspace"]}
        path.write_text(json.dumps(record, indent=4, ensure_ascii=False), encoding="utf-8")
        return dataclasses.replace(task, source_file=str(path))

    entries = {task.name: {"t2l_role": "held_out" if task.name in held else "train",
                           "primitives": list(specs[task.name].primitives),
                           "descriptions": space.descriptions.train[task.name],
                           "eval_descriptions": space.descriptions.held_out[task.name]} for task in space.tasks}
    source = {"generator": "t2l_ray.data.taskspace", "seed": seed, "instances_per_task": instances_per_task}
    (out / "descriptions.json").write_text(json.dumps({"_source": source, "tasks": entries}, indent=4), encoding="utf-8")
    (out / TRAIN_LIST).write_text("".join(f"{t.name}\n" for t in space.train), encoding="utf-8")
    (out / HELD_OUT_LIST).write_text("".join(f"{t.name}\n" for t in space.held_out), encoding="utf-8")
    return dataclasses.replace(space, train=[write(t) for t in space.train], held_out=[write(t) for t in space.held_out])
