"""SNI loader: the real shared files, their quirks, task selection, and every kind of broken file."""

import json
import re

import pytest
from sni_paths import sni_dir

from t2l_ray.data.sni import (
    Instance,
    MalformedTask,
    NoUsableTasks,
    Skipped,
    instance_rows,
    load_sni,
    read_task,
    read_task_names,
)


@pytest.fixture(scope="module")
def sni():
    folder = sni_dir()
    tasks, skipped = load_sni(folder)
    return folder, {task.name: task for task in tasks}, skipped


def test_every_shared_file_loads_with_its_own_instance_count(sni):
    folder, tasks, skipped = sni
    files = sorted(folder.glob("task*.json"))
    assert skipped == []
    assert sorted(tasks) == [path.stem for path in files]
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids_in_text = len(re.findall(r'"id": "task\d+-', text))  # counted without a JSON parser
        task = tasks[path.stem]
        assert len(task.instances) == ids_in_text == len(json.loads(text)["Instances"]), path.name
        assert task.source_file == str(path)
        assert len({inst.id for inst in task.instances}) == len(task.instances)


def test_known_instance_is_read_verbatim(sni):
    _, tasks, _ = sni
    task = tasks["task1146_country_capital"]
    assert task.instances[0] == Instance("task1146-caea1179adc149ffb2a3ecb2ea3abefc", "Afghanistan", ["Kabul"])
    assert task.categories == ["Misc."]
    assert task.definition == (
        "In this task, you are given a country name and you need to return the capital city of the given country"
    )


def test_task288_two_definitions_are_joined_with_a_space(sni):
    _, tasks, _ = sni
    assert tasks["task288_gigaword_summarization"].definition == (
        "In this task, you are given a text of the article. Your task is to generate a headline (title) for this "
        "article. Given a passage, write a short summary based on the passage."
    )


def test_nan_url_files_load_although_strict_json_rejects_them(sni):
    folder, tasks, _ = sni
    for name in ("task636_extract_and_sort_unique_alphabets_in_a_list", "task1316_remove_duplicates_string"):
        text = (folder / f"{name}.json").read_text(encoding="utf-8")
        with pytest.raises(ValueError):
            json.loads(text, parse_constant=lambda token: (_ for _ in ()).throw(ValueError(token)))
        assert len(tasks[name].instances) > 0


def test_list_outputs_keep_every_answer_in_order(sni):
    _, tasks, _ = sni
    commongen = tasks["task102_commongen_sentence_generation"].instances[0]
    assert commongen.outputs == [
        "The dog is wagging his tail.",
        "A dog wags his tail at the boy.",
        "a dog wags its tail with its heart",
    ]
    trivia = {inst.id: inst for inst in tasks["task1564_triviaqa_answer_generation"].instances}
    assert trivia["task1564-7af1cc95a9c447358974d40f80658364"].outputs == ["4", "Golden Grand Slam"]


def test_non_ascii_backslashes_and_leading_spaces_survive(sni):
    _, tasks, _ = sni
    paws = {inst.id: inst for inst in tasks["task770_pawsx_english_text_modification"].instances}
    assert "Акшуатский дендропарк" in paws["task770-bac9e7761542439aaba6ff76e53797b6"].input
    assert "Škoda" in paws["task770-cff11252602c42b3ad4e738de85479c1"].outputs[0]
    gigaword = {inst.id: inst for inst in tasks["task288_gigaword_summarization"].instances}
    assert "#.#### \\/ ## to the greenback" in gigaword["task288-06750ecf103846f48026ddba038bcc3f"].input
    person = tasks["task1453_person_entity_extraction_btc_corpus"].instances[0]
    assert person.input.startswith(" Defence industry roadshow")


def test_task_list_selects_and_reports_missing_names(sni, tmp_path):
    folder, _, _ = sni
    listing = tmp_path / "tasks.txt"
    listing.write_text(
        "# seen tasks\n\ntask1146_country_capital\n  task429_senteval_tense.json  # trailing comment\ntask0_not_there\n"
    )
    tasks, skipped = load_sni(folder, task_list=listing)
    assert [t.name for t in tasks] == ["task1146_country_capital", "task429_senteval_tense"]
    assert skipped == [Skipped(str(folder / "task0_not_there.json"), "task task0_not_there is in the task list but has no file")]


def test_exclusion_list_and_explicit_file_list(sni):
    folder, _, _ = sni
    files = [folder / "task1146_country_capital.json", folder / "task429_senteval_tense.json"]
    tasks, skipped = load_sni(files, exclude=["task429_senteval_tense"])
    assert [t.name for t in tasks] == ["task1146_country_capital"] and skipped == []
    everything, _ = load_sni(folder, exclude=["task1146_country_capital"])
    assert "task1146_country_capital" not in {t.name for t in everything}
    assert len(everything) == len(list(folder.glob("task*.json"))) - 1


def test_read_task_names_strips_comments_blanks_and_suffix(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a\n# b\n\n c.json \nd # e\n")
    assert read_task_names(listing) == ["a", "c", "d"]
    assert read_task_names(["x.json", " y ", ""]) == ["x", "y"]


def good_task(**overrides):
    data = {
        "Definition": ["Echo the input."],
        "Categories": ["Misc."],
        "Instances": [{"id": "task1-a", "input": "hi", "output": ["hi"]}, {"id": "task1-b", "input": "yo", "output": ["yo"]}],
    }
    data.update(overrides)
    return data


BROKEN = {
    "invalid_json": ('{"Definition": ["x"], "Instances": [', "invalid JSON"),
    "missing_definition": ({k: v for k, v in good_task().items() if k != "Definition"}, "missing Definition"),
    "missing_instances": ({k: v for k, v in good_task().items() if k != "Instances"}, "missing Instances"),
    "empty_outputs": (good_task(Instances=[{"id": "task1-bad", "input": "x", "output": []}]), "instance task1-bad"),
    "non_string_output": (
        good_task(Instances=[{"id": "task1-a", "input": "x", "output": ["ok"]}, {"id": "task1-num", "input": "y", "output": [3]}]),
        "instance task1-num",
    ),
    "non_string_input": (good_task(Instances=[{"id": "task1-in", "input": 7, "output": ["7"]}]), "instance task1-in"),
    "duplicate_ids": (good_task(Instances=[{"id": "task1-d", "input": "a", "output": ["a"]}] * 2), "duplicate id"),
    "definition_not_list": (good_task(Definition="Echo."), "Definition must be a list"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_is_skipped_with_a_reason_naming_it(tmp_path, case):
    content, expected_reason = BROKEN[case]
    (tmp_path / "task1_good.json").write_text(json.dumps(good_task()))
    bad = tmp_path / f"task2_{case}.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    tasks, skipped = load_sni(tmp_path)
    assert [t.name for t in tasks] == ["task1_good"]
    assert len(skipped) == 1 and skipped[0].file == str(bad)
    assert expected_reason in skipped[0].reason
    with pytest.raises(MalformedTask, match=re.escape(expected_reason)):
        read_task(bad)


def test_zero_usable_tasks_raises_listing_every_reason(tmp_path):
    (tmp_path / "task1_a.json").write_text("not json")
    (tmp_path / "task2_b.json").write_text(json.dumps({"Definition": ["x"]}))
    with pytest.raises(NoUsableTasks) as error:
        load_sni(tmp_path)
    message = str(error.value)
    assert "task1_a.json: invalid JSON" in message
    assert "task2_b.json: missing Instances" in message


def test_empty_folder_and_missing_folder_raise(tmp_path):
    with pytest.raises(NoUsableTasks, match="no task\\*.json files"):
        load_sni(tmp_path)
    with pytest.raises(NoUsableTasks, match="not a folder"):
        load_sni(tmp_path / "absent")


def test_instance_rows_carry_what_tokenization_needs(tmp_path):
    (tmp_path / "task1_echo.json").write_text(json.dumps(good_task()))
    tasks, _ = load_sni(tmp_path)
    rows = instance_rows(tasks)
    assert rows == [
        {"task": "task1_echo", "id": "task1-a", "definition": "Echo the input.", "input": "hi", "outputs": ["hi"]},
        {"task": "task1_echo", "id": "task1-b", "definition": "Echo the input.", "input": "yo", "outputs": ["yo"]},
    ]


def test_same_task_name_twice_in_a_file_list_skips_the_second(tmp_path):
    first, second = tmp_path / "a" / "task1_echo.json", tmp_path / "b" / "task1_echo.json"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(json.dumps(good_task()))
    tasks, skipped = load_sni([first, second])
    assert [t.source_file for t in tasks] == [str(first)]
    assert skipped[0].file == str(second) and "duplicate task name task1_echo" in skipped[0].reason
