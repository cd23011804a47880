"""T2L prompts and training tokens: exact strings from real SNI instances, label masks, truncation, batches."""

import numpy as np
import pandas as pd
import pytest
from sni_paths import sni_dir

from t2l_ray.data.prompts import (
    IGNORE_INDEX,
    PLAIN_TEMPLATE,
    TokenizeBatch,
    encode_prompts,
    render_messages,
    render_prompt,
    target_text,
    tokenize_batch,
    user_prompt,
)
from t2l_ray.data.sni import instance_rows, load_sni
from t2l_ray.data.suite import build_suite
from t2l_ray.data.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    rows = instance_rows(build_suite(seed=0, instances_per_task=20).tasks)
    texts = [f"{r['definition']}\n\n{r['input']}\n{', '.join(r['outputs'])}" for r in rows]
    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(texts, folder, vocab_size=1024)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def sni_tasks():
    tasks, _ = load_sni(sni_dir())
    return {task.name: task for task in tasks}


def row(definition, text, outputs, **extra):
    return {"definition": definition, "input": text, "outputs": outputs, **extra}


def test_exact_prompt_for_a_real_instance(sni_tasks):
    task = sni_tasks["task1146_country_capital"]
    instance = task.instances[0]
    assert user_prompt(task.definition, instance.input, len(instance.outputs)) == (
        "In this task, you are given a country name and you need to return the capital city of the given country"
        " Please complete the task without any explanation.\n\nAfghanistan"
    )
    assert target_text(instance.outputs) == "Kabul"


def test_multiple_answers_add_t2l_list_hint_and_join_with_commas(sni_tasks):
    task = sni_tasks["task102_commongen_sentence_generation"]
    instance = task.instances[0]
    prompt = user_prompt(task.definition, instance.input, len(instance.outputs))
    assert prompt == (
        task.definition + " Please complete the task without any explanation."
        "\nThe answer should be a comma-separated list of possible completions.\n\ndog#tail#wag"
    )
    assert target_text(instance.outputs) == (
        "The dog is wagging his tail., A dog wags his tail at the boy., a dog wags its tail with its heart"
    )


def test_input_whitespace_is_stripped_like_sni_collator(sni_tasks):
    task = sni_tasks["task1453_person_entity_extraction_btc_corpus"]
    prompt = user_prompt(task.definition, task.instances[0].input)
    assert prompt.endswith("explanation.\n\nDefence industry roadshow with Stuart Robert continues in Adelaide ,"
                           " Sydney today - SMEs struggling with erratic ALP decisions")


def test_conversations_render_as_training_renders_its_one_turn(tokenizer_dir):
    chat = load_tokenizer(tokenizer_dir)
    turn = [{"role": "user", "content": "Say hi.\n\nhello"}]
    assert render_messages(chat, turn) == render_prompt(chat, "Say hi.\n\nhello")
    talk = [{"role": "system", "content": "Be brief."}, *turn, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"}]
    assert render_messages(chat, talk) == ("<s><|system|>\nBe brief.</s>\n<|user|>\nSay hi.\n\nhello</s>\n"
                                           "<|assistant|>\nhi</s>\n<|user|>\nagain</s>\n<|assistant|>\n")
    (ids,) = encode_prompts(chat, [render_messages(chat, turn)])
    assert ids.count(chat.bos_token_id) == 1  # the template writes the BOS; none is added twice
    plain = load_tokenizer(tokenizer_dir)
    plain.chat_template = None
    assert render_messages(plain, talk) == PLAIN_TEMPLATE.format(prompt="Be brief.\n\nSay hi.\n\nhello\n\nhi\n\nagain")
    assert encode_prompts(plain, ["x"])[0][0] == plain.bos_token_id


def test_chat_template_rendering_and_plain_fallback(tokenizer_dir):
    chat = load_tokenizer(tokenizer_dir)
    assert render_prompt(chat, "Say hi.\n\nhello") == "<s><|user|>\nSay hi.\n\nhello</s>\n<|assistant|>\n"
    plain = load_tokenizer(tokenizer_dir)
    plain.chat_template = None
    assert render_prompt(plain, "Say hi.\n\nhello") == PLAIN_TEMPLATE.format(prompt="Say hi.\n\nhello")
    out = tokenize_batch({k: [v] for k, v in row("Say hi.", "hello", ["hi"]).items()}, plain)
    assert out["input_ids"][0, 0] == plain.bos_token_id  # plain path uses the tokenizer's own special tokens
    assert plain.decode(out["input_ids"][0, : out["prompt_tokens"][0]], skip_special_tokens=True) == (
        "Say hi. Please complete the task without any explanation.\n\nhello\n\nAnswer:\n"
    )


def test_only_response_tokens_are_labelled_and_end_with_eos(tokenizer, sni_tasks):
    rows = instance_rows([sni_tasks["task1146_country_capital"], sni_tasks["task102_commongen_sentence_generation"]])
    batch = {key: [r[key] for r in rows[:3] + rows[-3:]] for key in rows[0]}
    out = tokenize_batch(batch, tokenizer, max_prompt_tokens=4096, max_response_tokens=4096)
    assert out["input_ids"].shape == out["labels"].shape == out["attention_mask"].shape
    assert out["input_ids"].shape[1] == max(out["prompt_tokens"] + out["response_tokens"])
    for i in range(len(batch["input"])):
        p, r = out["prompt_tokens"][i], out["response_tokens"][i]
        ids, labels, mask = out["input_ids"][i], out["labels"][i], out["attention_mask"][i]
        prompt_text = render_prompt(tokenizer, user_prompt(batch["definition"][i], batch["input"][i], len(batch["outputs"][i])))
        assert ids[:p].tolist() == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        assert (labels[:p] == IGNORE_INDEX).all()
        assert labels[p : p + r].tolist() == ids[p : p + r].tolist()
        assert labels[p + r - 1] == tokenizer.eos_token_id
        assert tokenizer.decode(labels[p : p + r - 1]) == target_text(batch["outputs"][i])
        assert (labels[p + r :] == IGNORE_INDEX).all() and (ids[p + r :] == tokenizer.pad_token_id).all()
        assert mask.tolist() == [1] * (p + r) + [0] * (len(mask) - p - r)


def test_prompt_and_response_are_truncated_separately(tokenizer):
    long_input = " ".join(["apple banana candle"] * 60)
    long_answer = " ".join(["dragon engine forest"] * 30)
    batch = {"definition": ["Repeat the words.", "Echo."], "input": [long_input, "hi"], "outputs": [[long_answer], ["hi"]]}
    full = tokenize_batch(batch, tokenizer, max_prompt_tokens=10_000, max_response_tokens=10_000)
    max_prompt, max_response = int(full["prompt_tokens"][1]), 5  # the short row fits exactly
    cut = tokenize_batch(batch, tokenizer, max_prompt_tokens=max_prompt, max_response_tokens=max_response)

    long_prompt = full["input_ids"][0, : full["prompt_tokens"][0]].tolist()
    long_response = full["labels"][0, full["prompt_tokens"][0] : full["prompt_tokens"][0] + full["response_tokens"][0]].tolist()
    assert len(long_prompt) > max_prompt and len(long_response) > max_response
    assert (cut["prompt_tokens"][0], cut["response_tokens"][0]) == (max_prompt, max_response)
    assert cut["input_ids"][0, :max_prompt].tolist() == long_prompt[-max_prompt:]  # the end is kept
    assert tokenizer.decode(cut["input_ids"][0, :max_prompt]).endswith("apple banana candle</s>\n<|assistant|>\n")
    response = cut["labels"][0, max_prompt : max_prompt + max_response].tolist()
    assert response == long_response[: max_response - 1] + [tokenizer.eos_token_id]  # the start, then EOS

    short = int(full["prompt_tokens"][1] + full["response_tokens"][1])
    assert cut["input_ids"][1, :short].tolist() == full["input_ids"][1, :short].tolist()
    assert cut["labels"][1, :short].tolist() == full["labels"][1, :short].tolist()
    assert cut["input_ids"].shape[1] == max_prompt + max_response


def test_pandas_and_numpy_batches_agree_and_pass_other_columns_through(tokenizer):
    rows = [
        row("Add the numbers.", "2, 3", ["5"], task="task9028_add_two", id="a", description="Add them."),
        row("Name an animal.", "the cat saw the dog", ["cat", "dog"], task="task9025_name_an_animal", id="b", description="Any animal."),
    ]
    frame = pd.DataFrame(rows)
    numpy_batch = {column: frame[column].to_numpy() for column in frame.columns}
    numpy_batch["outputs"] = np.empty(len(rows), dtype=object)  # what Ray hands over for a list column
    numpy_batch["outputs"][:] = [np.array(r["outputs"], dtype=object) for r in rows]
    from_pandas = tokenize_batch(frame, tokenizer)
    from_numpy = tokenize_batch(numpy_batch, tokenizer)
    assert from_pandas.keys() == from_numpy.keys()
    for key in from_pandas:
        assert from_pandas[key].tolist() == from_numpy[key].tolist(), key
    assert from_pandas["task"].tolist() == ["task9028_add_two", "task9025_name_an_animal"]
    assert from_pandas["description"].tolist() == ["Add them.", "Any animal."]
    assert not {"definition", "input", "outputs"} & from_pandas.keys()
    assert all(from_pandas[k].dtype == np.int64 for k in ("input_ids", "labels", "attention_mask", "prompt_tokens"))
    p, r = from_pandas["prompt_tokens"][1], from_pandas["response_tokens"][1]
    assert tokenizer.decode(from_pandas["labels"][1, p : p + r - 1]) == "cat, dog"


def test_callable_class_loads_tokenizer_from_folder(tokenizer, tokenizer_dir):
    batch = {"definition": ["Echo."], "input": ["hello"], "outputs": [["hello"]]}
    expected = tokenize_batch(batch, tokenizer, max_prompt_tokens=8, max_response_tokens=3)
    got = TokenizeBatch(str(tokenizer_dir), max_prompt_tokens=8, max_response_tokens=3)(batch)
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in expected.items()}


def test_missing_columns_and_bad_limits_are_errors(tokenizer):
    with pytest.raises(KeyError, match="missing \\['outputs'\\]"):
        tokenize_batch({"definition": ["d"], "input": ["i"]}, tokenizer)
    with pytest.raises(ValueError, match="at least 1"):
        tokenize_batch({"definition": ["d"], "input": ["i"], "outputs": [["o"]]}, tokenizer, max_response_tokens=0)
