"""The compositional task space: held-out tasks are new combinations of seen primitives, descriptions are many
and varied, answers follow the primitives, the same seed gives the same space in any process."""

import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from t2l_ray.data import taskspace
from t2l_ray.data.descriptions import load_descriptions
from t2l_ray.data.sni import load_sni
from t2l_ray.data.suite import HELD_OUT_LIST, TRAIN_LIST
from t2l_ray.data.taskspace import build_space, write_space

SPACE_DIGEST = """
import hashlib, json, sys
from t2l_ray.data.taskspace import build_space
space = build_space(seed=int(sys.argv[1]), instances_per_task=5, descriptions_per_task=20)
rows = [[t.name, [[i.id, i.input, i.outputs] for i in t.instances], space.descriptions.train[t.name],
         space.descriptions.held_out[t.name]] for t in space.tasks]
print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())
"""


@pytest.fixture(scope="module")
def space():
    return build_space(seed=0, instances_per_task=30, descriptions_per_task=24)


def slug_of(name: str) -> str:
    return name.split("_", 1)[1]


def primitives(name: str) -> tuple[str, str, str]:
    spec = {s.slug: s for s in taskspace.all_specs()}[slug_of(name)]
    return spec.primitives


def test_space_has_enough_training_and_held_out_tasks(space):
    assert len(space.train) >= 100 and len(space.held_out) >= 20
    names = [t.name for t in space.tasks]
    assert len(set(names)) == len(names) == len(taskspace.all_specs())
    assert all(re.fullmatch(r"task\d+_[a-z0-9_]+", n) for n in names)
    assert all(len(t.instances) == 30 and len({i.input for i in t.instances}) == 30 for t in space.tasks)


def test_held_out_tasks_are_unseen_combinations_of_seen_primitives_and_pairs(space):
    train = [primitives(t.name) for t in space.train]
    held = [primitives(t.name) for t in space.held_out]
    assert not set(train) & set(held)
    for family in range(3):
        assert {p[family] for p in held} <= {p[family] for p in train}
    seen_pairs = {(i, j, p[i], p[j]) for p in train for i, j in itertools.combinations(range(3), 2)}
    for p in held:
        assert all((i, j, p[i], p[j]) in seen_pairs for i, j in itertools.combinations(range(3), 2)), p
    for a, b in itertools.combinations(held, 2):  # no two held-out tasks share two primitives
        assert sum(x == y for x, y in zip(a, b)) < 2, (a, b)


def test_every_task_has_twenty_distinct_descriptions_and_held_out_wordings_of_its_own(space):
    all_train = {text for texts in space.descriptions.train.values() for text in texts}
    for task in space.tasks:
        train, held = space.descriptions.train[task.name], space.descriptions.held_out[task.name]
        assert len(train) == len(set(train)) == 24 and len(held) == len(set(held)) == 24
        assert not set(held) & all_train  # a held-out wording is never a training string
        assert task.definition not in train
    frames = [re.escape(f).replace(r"\{op\}", ".*").replace(r"\{fmt\}", ".*") for f in taskspace.HELD_OUT_FRAMES]
    held_frame = re.compile("|".join(f"(?:^|: ){frame}$" for frame in frames), re.IGNORECASE)
    assert all(held_frame.search(t) for task in space.tasks for t in space.descriptions.held_out[task.name])
    assert not any(held_frame.search(t) for t in all_train)


def test_descriptions_name_their_primitives_in_varied_words(space):
    """Every description uses a wording of each of its task's primitives, and a task's descriptions use at
    least three wordings of each (the plain format may go unsaid)."""
    by_key = {p.key: p for family in (taskspace.SELECTORS, taskspace.OPERATIONS, taskspace.FORMATS) for p in family}

    def parts(wording: str) -> list[str]:  # the fixed words of a wording, around the selector's slot
        return [part.strip(", ").lower() for part in wording.split("{sel}") if part.strip(", ")]

    for task in space.train[::7]:
        texts = [t.lower() for t in space.descriptions.train[task.name]]
        for primitive in (by_key[key] for key in primitives(task.name)):
            found = [{w for w in primitive.phrases if parts(w) and all(p in text for p in parts(w))} for text in texts]
            if primitive.key != "plain":
                assert all(found), (task.name, primitive.key)
                assert len(set().union(*found)) >= 3, (task.name, primitive.key)


@pytest.mark.parametrize(("slug", "answer"), [
    ("first_word_plain", "apple"),
    ("animal_initial_twice", "t t"),
    ("second_final_thrice", "r r r"),
    ("third_spell_labelled", "answer: c a n d l e"),
    ("last_length_plain", "6"),
    ("animal_length_word_labelled", "answer: five"),
])
def test_answers_follow_the_primitives(slug, answer):
    spec = {s.slug: s for s in taskspace.all_specs()}[slug]
    assert spec.answer("apple tiger candle rocket".split()) == answer


def test_instances_follow_their_task_rule(space):
    """Every instance: four distinct known words, exactly one an animal, and the answer its rule gives."""
    for task in space.tasks:
        spec = {s.slug: s for s in taskspace.all_specs()}[slug_of(task.name)]
        for instance in task.instances:
            words = instance.input.split()
            assert len(words) == len(set(words)) == 4 and sum(w in taskspace.ANIMALS for w in words) == 1
            assert set(words) <= set(taskspace.ANIMALS + taskspace.OBJECTS)
            assert instance.outputs == [spec.answer(words)]
    task = next(t for t in space.tasks if t.name.endswith("_animal_spell_plain"))
    assert all(i.outputs[0].replace(" ", "") in taskspace.ANIMALS for i in task.instances)


def test_same_seed_same_space_other_seed_other_instances(space):
    assert build_space(seed=0, instances_per_task=30, descriptions_per_task=24) == space
    other = build_space(seed=1, instances_per_task=30, descriptions_per_task=24)
    assert [t.name for t in other.tasks] == [t.name for t in space.tasks]
    assert other.descriptions == space.descriptions  # wordings belong to the task, not to the instance seed
    assert all([i.input for i in a.instances] != [i.input for i in b.instances] for a, b in zip(space.tasks, other.tasks))


def test_seeded_space_is_identical_in_another_process():
    digests = [
        subprocess.run([sys.executable, "-c", SPACE_DIGEST, "3"], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
                       cwd=Path(__file__).resolve().parents[2]).stdout.strip()
        for hash_seed in ("1", "2")
    ]
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_vague_descriptions_name_no_primitive():
    wordings = {w.strip(", ").lower() for family in (taskspace.SELECTORS, taskspace.FORMATS)
                for p in family for w in p.phrases + p.held_out_phrases if w}
    assert len(taskspace.VAGUE) >= 4
    assert not any(w in line.lower() for line in taskspace.VAGUE for w in wordings)


def test_facts_are_true():
    rng = random.Random(3)
    checked = 0
    for line in (line for _ in range(300) for line in taskspace.fact_lines(rng)):
        if m := re.fullmatch(r"(\w+) is spelled ([a-z ]+)\.", line):
            assert m[2].replace(" ", "") == m[1], line
        elif m := re.fullmatch(r"(\w+) has (\w+) letters\.", line):
            assert m[2] in (str(len(m[1])), taskspace.NUMBER_WORDS[len(m[1])]), line
        elif m := re.fullmatch(r"the word (\w+) starts with (\w) and ends with (\w)\.", line):
            assert (m[1][0], m[1][-1]) == (m[2], m[3]), line
        elif m := re.fullmatch(r"(\d+) is written (\w+)\.", line):
            assert taskspace.NUMBER_WORDS[int(m[1])] == m[2], line
        elif m := re.fullmatch(r"a (\w+) is an animal\. a (\w+) is not an animal\.", line):
            assert m[1] in taskspace.ANIMALS and m[2] in taskspace.OBJECTS, line
        elif m := re.fullmatch(r"in ([a-z ]+), the (first word|second word|third word|last word|animal) is (\w+)\.", line):
            words, where = m[1].split(), {s.definition: s for s in taskspace.SELECTORS}["the " + m[2]]
            assert len(words) == 4 and where.apply(words) == m[3], line
        else:
            continue
        checked += 1
    assert checked == 7 * 300  # seven checkable facts in every draw


def test_written_space_reads_back_through_the_sni_and_descriptions_loaders(tmp_path):
    written = write_space(tmp_path, seed=5, instances_per_task=6, descriptions_per_task=20)
    tasks, skipped = load_sni(tmp_path)
    assert skipped == [] and len(tasks) == len(written.tasks)
    assert sorted(tasks, key=lambda t: t.name) == sorted(written.tasks, key=lambda t: t.name)
    assert load_descriptions(tmp_path / "descriptions.json") == written.descriptions
    held, _ = load_sni(tmp_path, task_list=tmp_path / HELD_OUT_LIST)
    train, _ = load_sni(tmp_path, task_list=tmp_path / TRAIN_LIST)
    assert [t.name for t in held] == sorted(t.name for t in written.held_out)
    assert [t.name for t in train] == sorted(t.name for t in written.train)
    layout = json.loads((tmp_path / "descriptions.json").read_text())
    entry = layout["tasks"][written.held_out[0].name]
    assert entry["t2l_role"] == "held_out" and entry["primitives"] == list(primitives(written.held_out[0].name))
