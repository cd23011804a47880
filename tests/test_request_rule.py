"""The request rule shared by the factory and Serve: description checks, the id rule, content ids, id clashes."""

import hashlib

import pytest

from t2l_ray.request_rule import (
    IdClaims,
    RuleError,
    check_adapter_id,
    check_description,
    check_request,
    content_id,
    resolve_id,
    weights_digest,
)

SHA = "ab" * 32


@pytest.mark.parametrize("text,kind,phrase", [
    ("", "empty", "description is empty"),
    (" \n\t", "empty", "description is empty"),
    ("x" * 11, "too_long", "has 11 characters; the limit is 10 (max_chars)"),
    ("lone \ud800", "unicode", "lone surrogate"),
])
def test_bad_descriptions(text, kind, phrase):
    with pytest.raises(RuleError) as error:
        check_description(text, max_chars=10)
    assert error.value.kind == kind and phrase in str(error.value)


def test_good_descriptions_pass_unchanged():
    assert check_description("x" * 10, max_chars=10) == "x" * 10
    assert check_description("Résumé → 要約", max_chars=11) == "Résumé → 要約"


@pytest.mark.parametrize("given", ["Upper", "a:b", "a/b", "a..b", "-lead", "", "x" * 129, 7, None])
def test_bad_ids(given):
    with pytest.raises(RuleError, match="invalid adapter id") as error:
        check_adapter_id(given)
    assert error.value.kind == "adapter_id"


def test_good_ids_and_the_content_id():
    for given in ("a", "sort_words-2", "0" + "x" * 127):
        assert check_adapter_id(given) == given
    made = content_id("Sort words.", SHA)
    assert made == "t2l-" + hashlib.sha256(f"{SHA}\0Sort words.".encode()).hexdigest()[:24]
    assert check_adapter_id(made) == made
    assert content_id("Sort words.", "cd" * 32) != made and content_id("Sort words!", SHA) != made
    assert resolve_id("Sort words.", None, SHA) == made and resolve_id("Sort words.", "mine", SHA) == "mine"
    with pytest.raises(RuleError):
        resolve_id("Sort words.", "Not/Valid", SHA)


def test_check_request_lists_every_broken_rule_by_field():
    assert check_request("Fine.", "fine", 100) == [] and check_request("Fine.", None, 100) == []
    problems = check_request("", "Bad/Id", 100)
    assert [(field, error.kind) for field, error in problems] == [("description", "empty"), ("id", "adapter_id")]


def test_id_claims_share_repeats_and_refuse_clashes():
    claims = IdClaims()
    assert claims.claim("a", "Task A.", "line 1", 1) == 1
    assert claims.claim("b", "Task B.", "line 2", 2) == 2
    assert claims.claim("a", "Task A.", "line 3", 3) == 1  # a repeat belongs to the first claim
    with pytest.raises(RuleError) as error:
        claims.claim("a", "Another task.", "line 4", 4)
    assert error.value.kind == "id_conflict"
    assert str(error.value) == "id 'a' is given twice: first at line 1 with a different description"


def test_weights_digest():
    data = b"\x00\x01weights"
    assert weights_digest(data) == (len(data), hashlib.sha256(data).hexdigest())
