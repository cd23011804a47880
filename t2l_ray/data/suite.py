"""A task suite generated in code, so the demo and tests run on no third-party data.

36 small tasks with describable behaviour in four families (string transforms, rule-based classification,
extraction, arithmetic). Several tasks share an input format (e.g. "23, 58" is added, subtracted,
multiplied or compared), so only the description tells a model which task it faces: exactly what a
hypernet has to learn from descriptions.

Each task has an SNI-style Definition, 5 training descriptions and 1 held-out description. Instances come
from `random.Random(f"{seed}/{task name}")`: the same seed gives the same suite in any process, another
seed gives other instances. Split rule: every fifth task in declaration order (index % 5 == 4) is a
held-out task, so each family has both training and held-out tasks.

`build_suite` returns the same `SNITask` objects as `sni.py`; `write_suite` writes them as SNI-schema files
plus a `descriptions.json` in the shared layout and the two task lists, so the folder reads like SNI.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from t2l_ray.data.descriptions import TaskDescriptions
from t2l_ray.data.sni import Instance, SNITask

FIRST_TASK_NUMBER = 9001
"""Suite task numbers start far above SNI's (about 1,700) so names never collide with real tasks."""
TRAIN_LIST = "train_tasks.txt"
HELD_OUT_LIST = "held_out_tasks.txt"

Generator = Callable[[random.Random], tuple[str, list[str]]]


@dataclass(frozen=True)
class SuiteTaskSpec:
    slug: str
    category: str
    definition: str
    descriptions: tuple[str, ...]
    eval_descriptions: tuple[str, ...]
    make: Generator
    """One instance from a random stream: (input, acceptable outputs)."""


@dataclass(frozen=True)
class Suite:
    seed: int
    train: list[SNITask]
    held_out: list[SNITask]
    descriptions: TaskDescriptions

    @property
    def tasks(self) -> list[SNITask]:
        return self.train + self.held_out


# --- vocabulary ---------------------------------------------------------------------------------------
WORDS = (
    "apple banana candle dragon engine forest harbor island jacket kettle ladder meadow needle orange pepper "
    "quartz rocket silver teapot umbrella valley wagon yellow zipper basket copper dinner feather giraffe hammer "
    "jungle kitten lemon marble napkin pillow puzzle saddle ticket velvet anchor blanket cactus donkey eraser "
    "fabric glacier helmet iceberg jigsaw kayak lantern magnet nectar oyster parrot quiver ribbon sandal tulip "
    "unicorn violin walnut yogurt almond bucket castle desert elbow falcon goblet hollow insect jester kernel "
    "lobster mirror nugget object planet quilt raisin shadow timber uncle vessel wizard acorn butter cherry "
    "dolphin empire fossil garlic hazel igloo jelly koala lizard muffin noodle orchid pebble rhythm spider tomato"
).split()
ANIMALS = (
    "cat dog horse tiger rabbit eagle shark frog lion mouse otter camel zebra goat duck whale owl fox bear snake"
).split()
THINGS = "table river lamp garden window bicycle letter bottle mountain chair cloud bridge pencil market train".split()
NAMES = "Alice Bruno Chloe Daniel Elena Farid Grace Hiro Ines Jonas Keiko Liam Maya Nadia Omar Priya Rosa Samir".split()
ADJECTIVES = "quiet bright heavy small ancient gentle rapid golden narrow curious".split()
VERBS = "sat near|waited by|walked past|rested under|looked at|ran toward|slept beside".split("|")
POSITIVE = "wonderful delightful excellent lovely superb pleasant brilliant charming".split()
NEGATIVE = "terrible awful dreadful horrible disappointing unpleasant miserable boring".split()
SUBJECTS = "the movie|the soup|the concert|the hotel|the book|the trip|the game|the lecture|the party".split("|")
LINKS = "was|seemed|felt|turned out".split("|")
VOWELS = "aeiouAEIOU"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _sentence(rng: random.Random, subject: str | None = None) -> str:
    subject = subject or rng.choice(THINGS + ANIMALS)
    return f"the {rng.choice(ADJECTIVES)} {subject} {rng.choice(VERBS)} the {rng.choice(THINGS)}"


def _pair(rng: random.Random, low: int = 1, high: int = 99) -> tuple[int, int]:
    return rng.randint(low, high), rng.randint(low, high)


def _numbers(rng: random.Random) -> list[int]:
    return rng.sample(range(1, 100), rng.randint(4, 7))


def _join(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _yes_no(flag: bool) -> list[str]:
    return ["yes" if flag else "no"]


# --- generators: one instance each -------------------------------------------------------------------
def _reverse_word(rng):
    word = rng.choice(WORDS)
    return word, [word[::-1]]


def _uppercase(rng):
    text = _sentence(rng)
    return text, [text.upper()]


def _lowercase(rng):
    text = "".join(c.upper() if rng.random() < 0.4 else c for c in _sentence(rng))
    return text, [text.lower()]


def _sort_letters(rng):
    word = rng.choice(WORDS)
    return word, ["".join(sorted(word))]


def _remove_vowels(rng):
    text = _sentence(rng)
    return text, [re.sub(f"[{VOWELS}]", "", text)]


def _capitalize_words(rng):
    text = _sentence(rng)
    return text, [" ".join(w.capitalize() for w in text.split())]


def _reverse_word_order(rng):
    text = _sentence(rng)
    return text, [" ".join(reversed(text.split()))]


def _underscores(rng):
    text = _sentence(rng)
    return text, [text.replace(" ", "_")]


def _acronym(rng):
    words = rng.sample(WORDS, rng.randint(3, 5))
    return " ".join(words), ["".join(w[0] for w in words).upper()]


def _double_letters(rng):
    word = rng.choice(WORDS)
    return word, ["".join(c * 2 for c in word)]


def _even_odd(rng):
    number = rng.randint(0, 9999)
    return str(number), ["even" if number % 2 == 0 else "odd"]


def _mentions_animal(rng):
    has_animal = rng.random() < 0.5
    return _sentence(rng, rng.choice(ANIMALS if has_animal else THINGS)), _yes_no(has_animal)


def _palindrome(rng):
    half = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 4)))
    if rng.random() < 0.5:
        return half + rng.choice(["", rng.choice(LETTERS)]) + half[::-1], ["yes"]
    word = half + "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 4)))
    return word, _yes_no(word == word[::-1])


def _greater_than_500(rng):
    number = rng.randint(0, 999)
    return str(number), _yes_no(number > 500)


def _sentiment(rng):
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    return f"{rng.choice(SUBJECTS)} {rng.choice(LINKS)} {word}", ["positive" if positive else "negative"]


def _starts_with_vowel(rng):
    word = rng.choice(WORDS + ANIMALS)
    return word, _yes_no(word[0] in VOWELS)


def _larger_of_two(rng):
    a, b = _pair(rng)
    while a == b:
        a, b = _pair(rng)
    return f"{a}, {b}", ["first" if a > b else "second"]


def _repeated_letter(rng):
    word = rng.choice(WORDS + ANIMALS)
    return word, _yes_no(len(set(word)) < len(word))


def _first_word(rng):
    text = " ".join(rng.sample(WORDS, rng.randint(3, 6)))
    return text, [text.split()[0]]


def _last_word(rng):
    text = " ".join(rng.sample(WORDS, rng.randint(3, 6)))
    return text, [text.split()[-1]]


def _digits(rng):
    chars = [rng.choice(LETTERS) for _ in range(rng.randint(4, 8))]
    chars += [rng.choice("0123456789") for _ in range(rng.randint(1, 4))]
    rng.shuffle(chars)
    text = "".join(chars)
    return text, ["".join(c for c in text if c.isdigit())]


def _longest_word(rng):
    while True:
        words = rng.sample(WORDS, rng.randint(3, 5))
        longest = max(len(w) for w in words)
        if sum(len(w) == longest for w in words) == 1:
            return " ".join(words), [max(words, key=len)]


def _names(rng):
    people = rng.sample(NAMES, rng.randint(1, 3))
    text = f"{' and '.join(people)} {rng.choice(VERBS)} the {rng.choice(THINGS)}"
    return text, [", ".join(people)]


def _any_animal(rng):
    first, second = rng.sample(ANIMALS, 2)
    return f"the {first} {rng.choice(VERBS)} the {second}", [first, second]


def _count_vowels(rng):
    word = rng.choice(WORDS + ANIMALS)
    return word, [str(sum(c in VOWELS for c in word))]


def _count_words(rng):
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
    return text, [str(len(text.split()))]


def _add(rng):
    a, b = _pair(rng)
    return f"{a}, {b}", [str(a + b)]


def _subtract(rng):
    a, b = _pair(rng)
    return f"{a}, {b}", [str(a - b)]


def _multiply(rng):
    a, b = _pair(rng, 2, 19)
    return f"{a}, {b}", [str(a * b)]


def _maximum(rng):
    numbers = _numbers(rng)
    return _join(numbers), [str(max(numbers))]


def _sum(rng):
    numbers = _numbers(rng)
    return _join(numbers), [str(sum(numbers))]


def _sort_numbers(rng):
    numbers = _numbers(rng)
    return _join(numbers), [_join(sorted(numbers))]


def _successor(rng):
    number = rng.randint(0, 9999)
    return str(number), [str(number + 1)]


def _word_length(rng):
    word = rng.choice(WORDS + ANIMALS)
    return word, [str(len(word))]


def _unique_letters(rng):
    text = "".join(rng.sample(WORDS, 2))
    return text, ["".join(sorted(set(text)))]


def _minimum(rng):
    numbers = _numbers(rng)
    return _join(numbers), [str(min(numbers))]


def _spec(slug, category, definition, descriptions, make) -> SuiteTaskSpec:
    *train, held_out = descriptions
    return SuiteTaskSpec(slug, category, definition, tuple(train), (held_out,), make)


STRING, CLASSIFY, EXTRACT, ARITH = "String Transformation", "Classification", "Information Extraction", "Arithmetic"

SUITE_SPECS: tuple[SuiteTaskSpec, ...] = (
    _spec(
        "reverse_word",
        STRING,
        "In this task, you are given a word. Write its letters in reverse order.",
        (
            "Reverse the letters of the given word.",
            "Spell the input word backwards.",
            "Write the word from its last letter to its first.",
            "Output the characters of the word in the opposite order.",
            "Flip the word so that it reads right to left.",
            "Produce the mirror image of the word, letter by letter.",
        ),
        _reverse_word,
    ),
    _spec(
        "uppercase_sentence",
        STRING,
        "In this task, you are given a sentence. Rewrite it in capital letters.",
        (
            "Convert every letter of the sentence to uppercase.",
            "Rewrite the text using only capital letters.",
            "Return the sentence in all caps.",
            "Change all lowercase letters in the input to uppercase.",
            "Shout the sentence: make each letter a capital.",
            "Output the same text with each character upper-cased.",
        ),
        _uppercase,
    ),
    _spec(
        "lowercase_sentence",
        STRING,
        "In this task, you are given a sentence with mixed capitalisation. Rewrite it in lowercase letters.",
        (
            "Convert every letter of the sentence to lowercase.",
            "Remove all capital letters by lower-casing the text.",
            "Return the sentence written entirely in small letters.",
            "Normalise the casing of the input so that nothing is capitalised.",
            "Change each uppercase character to its lowercase form.",
            "Output the text in lower case only.",
        ),
        _lowercase,
    ),
    _spec(
        "sort_letters",
        STRING,
        "In this task, you are given a word. Output its letters sorted in alphabetical order.",
        (
            "Sort the letters of the word alphabetically.",
            "Rearrange the characters of the word from a to z.",
            "Put the word's letters in alphabetical order, keeping repeats.",
            "Order the letters of the input word as they appear in the alphabet.",
            "Alphabetise the letters that make up the word.",
            "List every letter of the word, arranged from the start of the alphabet to the end.",
        ),
        _sort_letters,
    ),
    _spec(
        "remove_vowels",
        STRING,
        "In this task, you are given a sentence. Remove every vowel (a, e, i, o, u) from it and keep everything else.",
        (
            "Delete all vowels from the sentence.",
            "Strip the letters a, e, i, o and u out of the text.",
            "Return the sentence with its vowels removed, spaces kept.",
            "Keep only the consonants, spaces and other characters of the input.",
            "Drop each vowel in the sentence and leave the rest untouched.",
            "Write the text again without any of its vowels.",
        ),
        _remove_vowels,
    ),
    _spec(
        "capitalize_words",
        STRING,
        "In this task, you are given a sentence. Capitalise the first letter of every word.",
        (
            "Make the first letter of each word uppercase.",
            "Convert the sentence to title case.",
            "Start every word of the text with a capital letter.",
            "Capitalise each word's initial letter and keep the rest lowercase.",
            "Rewrite the sentence so that all words begin with a capital.",
            "Turn the input into a headline-style capitalised phrase.",
        ),
        _capitalize_words,
    ),
    _spec(
        "reverse_word_order",
        STRING,
        "In this task, you are given a sentence. Write its words in reverse order.",
        (
            "Reverse the order of the words in the sentence.",
            "Output the words of the text from last to first.",
            "Keep each word intact but list the words backwards.",
            "Rearrange the sentence so that the final word comes first.",
            "Flip the sequence of words in the input.",
            "Read the sentence word by word from the end and write it that way.",
        ),
        _reverse_word_order,
    ),
    _spec(
        "underscores_for_spaces",
        STRING,
        "In this task, you are given a sentence. Replace every space with an underscore.",
        (
            "Replace the spaces in the sentence with underscores.",
            "Join the words of the text with _ instead of spaces.",
            "Turn the sentence into snake_case by swapping spaces for underscores.",
            "Substitute an underscore character for each blank.",
            "Connect the words using underscores rather than spaces.",
            "Write the text with every space changed to _.",
        ),
        _underscores,
    ),
    _spec(
        "acronym",
        STRING,
        "In this task, you are given a list of words. Form an acronym from the first letter of each word, in capitals.",
        (
            "Build an acronym from the initial letters of the words.",
            "Take the first letter of each word and join them in uppercase.",
            "Abbreviate the phrase into its capitalised initials.",
            "Output the uppercase initials of the words, in order, with no spaces.",
            "Create a short code made of each word's first letter.",
            "Compress the words into an acronym of capital letters.",
        ),
        _acronym,
    ),
    _spec(
        "double_letters",
        STRING,
        "In this task, you are given a word. Write each of its letters twice.",
        (
            "Repeat every letter of the word two times.",
            "Double each character in the input word.",
            "Write the word again with all its letters duplicated.",
            "Output each letter of the word followed by a copy of itself.",
            "Stutter the word: every letter appears twice in a row.",
            "Make a new word in which each original letter is doubled.",
        ),
        _double_letters,
    ),
    _spec(
        "unique_letters",
        STRING,
        "In this task, you are given a string of lowercase letters. Output each distinct letter once, in "
        "alphabetical order.",
        (
            "List the distinct letters of the string in alphabetical order.",
            "Remove repeated letters and sort what remains from a to z.",
            "Return every letter that occurs in the input exactly once, alphabetised.",
            "Extract the unique characters of the string and order them alphabetically.",
            "Write the set of letters used in the text, sorted.",
            "Deduplicate the letters of the string and arrange them in alphabetical order.",
        ),
        _unique_letters,
    ),
    _spec(
        "even_or_odd",
        CLASSIFY,
        "In this task, you are given a whole number. Answer \"even\" if it is divisible by two, otherwise \"odd\".",
        (
            "Decide whether the number is even or odd.",
            "Classify the integer by its parity: even or odd.",
            "Say 'even' for numbers divisible by 2 and 'odd' for the rest.",
            "Tell whether the given number leaves a remainder when divided by two.",
            "Label the number as even or odd.",
            "Check the last digit of the number and report if the number is even or odd.",
        ),
        _even_odd,
    ),
    _spec(
        "mentions_animal",
        CLASSIFY,
        "In this task, you are given a sentence. Answer \"yes\" if it mentions an animal and \"no\" otherwise.",
        (
            "Does the sentence mention an animal? Answer yes or no.",
            "Detect whether any animal appears in the text.",
            "Say yes when the sentence talks about an animal, no when it does not.",
            "Classify the sentence by whether it contains the name of an animal.",
            "Check the text for a creature such as a cat or a bear and answer yes or no.",
            "Answer yes if an animal is part of the sentence; otherwise answer no.",
        ),
        _mentions_animal,
    ),
    _spec(
        "is_palindrome",
        CLASSIFY,
        'In this task, you are given a string of letters. Answer "yes" if it reads the same backwards as '
        'forwards, otherwise "no".',
        (
            "Is the string a palindrome? Answer yes or no.",
            "Check whether the letters read the same in both directions.",
            "Say yes if reversing the string gives the same string.",
            "Decide if the input is symmetric when read from either end.",
            "Determine whether the word is a palindrome.",
            "Answer yes when the string equals its own reverse and no otherwise.",
        ),
        _palindrome,
    ),
    _spec(
        "greater_than_500",
        CLASSIFY,
        'In this task, you are given a number between 0 and 999. Answer "yes" if it is greater than 500, '
        'otherwise "no".',
        (
            "Is the number bigger than 500? Answer yes or no.",
            "Compare the number with 500 and say yes if it is larger.",
            "Decide whether the value exceeds five hundred.",
            "Answer yes for numbers above 500 and no for 500 or less.",
            "Check if the given integer is more than 500.",
            "Classify the number as above five hundred (yes) or not (no).",
        ),
        _greater_than_500,
    ),
    _spec(
        "sentiment",
        CLASSIFY,
        "In this task, you are given a short review. Classify its sentiment as \"positive\" or \"negative\".",
        (
            "Decide whether the review is positive or negative.",
            "Classify the opinion in the sentence as positive or negative.",
            "Tell if the writer liked or disliked the thing described.",
            "Label the sentiment of the short review.",
            "Read the statement and say whether its tone is positive or negative.",
            "Judge the emotional polarity of the review: positive or negative.",
        ),
        _sentiment,
    ),
    _spec(
        "starts_with_vowel",
        CLASSIFY,
        "In this task, you are given a word. Answer \"yes\" if its first letter is a vowel, otherwise \"no\".",
        (
            "Does the word start with a vowel? Answer yes or no.",
            "Check whether the first letter of the word is a, e, i, o or u.",
            "Say yes if the word begins with a vowel and no if it begins with a consonant.",
            "Classify the word by whether its initial letter is a vowel.",
            "Look at the first character of the word and tell if it is a vowel.",
            "Answer yes for words whose opening letter is a vowel.",
        ),
        _starts_with_vowel,
    ),
    _spec(
        "larger_of_two",
        CLASSIFY,
        'In this task, you are given two different numbers separated by a comma. Answer "first" if the first '
        'is larger, otherwise "second".',
        (
            "Which of the two numbers is larger? Answer first or second.",
            "Compare the two numbers and say which position holds the bigger one.",
            "Say first if the first number is greater, second if the second is.",
            "Tell whether the larger value comes first or second in the pair.",
            "Decide which number in the pair is bigger, by its position.",
            "Point to the greater of two numbers by answering first or second.",
        ),
        _larger_of_two,
    ),
    _spec(
        "repeated_letter",
        CLASSIFY,
        'In this task, you are given a word. Answer "yes" if some letter occurs more than once in it, '
        'otherwise "no".',
        (
            "Does any letter appear twice in the word? Answer yes or no.",
            "Check the word for repeated letters.",
            "Say yes if the word contains a letter more than once.",
            "Decide whether all letters of the word are distinct; answer no if they are.",
            "Look for a duplicated character in the word.",
            "Answer yes when at least one letter of the word is repeated.",
        ),
        _repeated_letter,
    ),
    _spec(
        "first_word",
        EXTRACT,
        "In this task, you are given a list of words separated by spaces. Output the first word.",
        (
            "Return the first word of the input.",
            "Extract the word that comes at the start of the text.",
            "Give only the opening word.",
            "Copy the initial word and ignore the rest.",
            "Output whichever word appears first.",
            "Pick out the leading word of the sequence.",
        ),
        _first_word,
    ),
    _spec(
        "last_word",
        EXTRACT,
        "In this task, you are given a list of words separated by spaces. Output the last word.",
        (
            "Return the final word of the input.",
            "Extract the word at the end of the text.",
            "Give only the closing word.",
            "Copy the last word and ignore everything before it.",
            "Output whichever word appears last.",
            "Pick out the trailing word of the sequence.",
        ),
        _last_word,
    ),
    _spec(
        "extract_digits",
        EXTRACT,
        "In this task, you are given a string of letters and digits. Output all the digits in the order they appear.",
        (
            "Extract every digit from the string, keeping their order.",
            "Remove the letters and keep only the numbers.",
            "Return the digits found in the text, in sequence.",
            "List the numeric characters of the input without separators.",
            "Filter the string down to its digits.",
            "Collect the digits 0 to 9 that occur in the input, in order.",
        ),
        _digits,
    ),
    _spec(
        "longest_word",
        EXTRACT,
        "In this task, you are given a few words. Output the longest one.",
        (
            "Find the longest word in the list.",
            "Return the word with the most letters.",
            "Extract the lengthiest word from the input.",
            "Pick the word that has the greatest number of characters.",
            "Output the single longest word.",
            "Identify which word is longest and write it.",
        ),
        _longest_word,
    ),
    _spec(
        "person_names",
        EXTRACT,
        "In this task, you are given a sentence. Output the names of the people in it, separated by commas.",
        (
            "List the names of the people mentioned in the sentence.",
            "Extract every person's name from the text.",
            "Return the people named in the sentence, comma-separated.",
            "Find the personal names in the input and write them in order.",
            "Pick out who is mentioned by name.",
            "Identify the human names in the sentence and list them.",
        ),
        _names,
    ),
    _spec(
        "name_an_animal",
        EXTRACT,
        "In this task, you are given a sentence with two animals. Output one of the animals mentioned.",
        (
            "Name an animal that appears in the sentence.",
            "Extract one of the animals mentioned in the text.",
            "Return any creature named in the sentence.",
            "Find an animal in the input and write its name.",
            "Pick one of the animals from the sentence.",
            "Identify an animal the sentence talks about.",
        ),
        _any_animal,
    ),
    _spec(
        "count_vowels",
        EXTRACT,
        "In this task, you are given a word. Output how many vowels it contains.",
        (
            "Count the vowels in the word.",
            "Return the number of letters in the word that are a, e, i, o or u.",
            "How many vowels does the word have?",
            "Tally the vowels of the input and output the count.",
            "Give the total number of vowels in the word as a number.",
            "Report how many of the word's letters are vowels.",
        ),
        _count_vowels,
    ),
    _spec(
        "count_words",
        EXTRACT,
        "In this task, you are given a list of words separated by spaces. Output how many words there are.",
        (
            "Count the words in the input.",
            "Return the number of words in the text.",
            "How many words are there? Answer with a number.",
            "Tally the space-separated words and output the total.",
            "Give the word count of the input.",
            "Report how many words the text contains.",
        ),
        _count_words,
    ),
    _spec(
        "add_two",
        ARITH,
        "In this task, you are given two numbers separated by a comma. Output their sum.",
        (
            "Add the two numbers.",
            "Return the sum of the pair of numbers.",
            "Compute the total of the two given values.",
            "Work out what the two numbers make when added together.",
            "Output the first number plus the second number.",
            "Find the result of adding both numbers.",
        ),
        _add,
    ),
    _spec(
        "subtract_two",
        ARITH,
        "In this task, you are given two numbers separated by a comma. Subtract the second number from the "
        "first and output the result.",
        (
            "Subtract the second number from the first.",
            "Return the first number minus the second one.",
            "Compute the difference of the two numbers, first minus second.",
            "Take the second value away from the first value.",
            "Output how much the first number exceeds the second, negative if it does not.",
            "Find the result of the first number minus the second number.",
        ),
        _subtract,
    ),
    _spec(
        "multiply_two",
        ARITH,
        "In this task, you are given two small numbers separated by a comma. Output their product.",
        (
            "Multiply the two numbers.",
            "Return the product of the pair.",
            "Compute the first number times the second.",
            "Work out what the two values give when multiplied together.",
            "Output the result of multiplying both numbers.",
            "Find the product of the two given integers.",
        ),
        _multiply,
    ),
    _spec(
        "maximum",
        ARITH,
        "In this task, you are given a list of numbers. Output the largest number in the list.",
        (
            "Return the largest number in the list.",
            "Find the maximum of the given numbers.",
            "Output the biggest value.",
            "Pick the greatest number from the list.",
            "Give the highest number among the inputs.",
            "Identify which number in the list is largest and write it.",
        ),
        _maximum,
    ),
    _spec(
        "sum_list",
        ARITH,
        "In this task, you are given a list of numbers. Output the sum of all of them.",
        (
            "Add up all the numbers in the list.",
            "Return the total of the given numbers.",
            "Compute the sum of the list.",
            "Output what the numbers make when added together.",
            "Find the combined total of every number.",
            "Give the sum of all values in the input.",
        ),
        _sum,
    ),
    _spec(
        "sort_numbers",
        ARITH,
        "In this task, you are given a list of numbers. Output them sorted from smallest to largest, "
        "separated by commas.",
        (
            "Sort the numbers in ascending order.",
            "Return the list ordered from lowest to highest.",
            "Arrange the numbers from smallest to biggest.",
            "Output the same numbers in increasing order.",
            "Put the values in ascending order, comma-separated.",
            "Order the list so that each number is no larger than the next.",
        ),
        _sort_numbers,
    ),
    _spec(
        "successor",
        ARITH,
        "In this task, you are given a whole number. Output the number that comes right after it.",
        (
            "Add one to the number.",
            "Return the next integer after the given one.",
            "Output the number plus one.",
            "Increment the value by one.",
            "Give the successor of the number.",
            "Write the number that follows the input when counting up.",
        ),
        _successor,
    ),
    _spec(
        "word_length",
        ARITH,
        "In this task, you are given a word. Output how many letters it has.",
        (
            "Count the letters in the word.",
            "Return the length of the word.",
            "How many characters does the word have?",
            "Output the number of letters that make up the word.",
            "Give the word's length as a number.",
            "Measure the word and report its letter count.",
        ),
        _word_length,
    ),
    _spec(
        "minimum",
        ARITH,
        "In this task, you are given a list of numbers. Output the smallest number in the list.",
        (
            "Return the smallest number in the list.",
            "Find the minimum of the given numbers.",
            "Output the lowest value.",
            "Pick the least number from the list.",
            "Give the smallest number among the inputs.",
            "Identify which number in the list is smallest and write it.",
        ),
        _minimum,
    ),
)


def task_name(index: int, spec: SuiteTaskSpec) -> str:
    return f"task{FIRST_TASK_NUMBER + index}_{spec.slug}"


def is_held_out(index: int) -> bool:
    """The fixed split rule: every fifth task is held out."""
    return index % 5 == 4


def build_suite(seed: int = 0, instances_per_task: int = 40) -> Suite:
    """The whole suite for a seed: training tasks, held-out tasks and their descriptions."""
    if instances_per_task < 1:
        raise ValueError("instances_per_task must be at least 1")
    train, held_out = [], []
    descriptions = TaskDescriptions()
    for index, spec in enumerate(SUITE_SPECS):
        name = task_name(index, spec)
        task = SNITask(
            name=name,
            definition=spec.definition,
            instances=_instances(spec, name, seed, instances_per_task),
            categories=[spec.category],
            source_file=f"{name}.json",
        )
        (held_out if is_held_out(index) else train).append(task)
        descriptions.train[name] = list(spec.descriptions)
        descriptions.held_out[name] = list(spec.eval_descriptions)
    return Suite(seed=seed, train=train, held_out=held_out, descriptions=descriptions)


def write_suite(out_dir: str | Path, seed: int = 0, instances_per_task: int = 40) -> Suite:
    """Write the suite as SNI-schema `taskNNNN_*.json` files, `descriptions.json` and the two task lists.

    Returns the suite with `source_file` pointing at the written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite = build_suite(seed, instances_per_task)
    specs = {task_name(index, spec): spec for index, spec in enumerate(SUITE_SPECS)}
    held_out = {task.name for task in suite.held_out}

    def write(task: SNITask) -> SNITask:
        path = out / f"{task.name}.json"
        record = _sni_record(specs[task.name], task, seed)
        path.write_text(json.dumps(record, indent=4, ensure_ascii=False), encoding="utf-8")
        return dataclasses.replace(task, source_file=str(path))

    entries = {
        task.name: {
            "t2l_role": "held_out" if task.name in held_out else "train",
            "descriptions": suite.descriptions.train[task.name],
            "eval_descriptions": suite.descriptions.held_out[task.name],
        }
        for task in suite.tasks
    }
    source = {"generator": "t2l_ray.data.suite", "seed": seed, "instances_per_task": instances_per_task}
    (out / "descriptions.json").write_text(
        json.dumps({"_source": source, "tasks": entries}, indent=4, ensure_ascii=False), encoding="utf-8"
    )
    (out / TRAIN_LIST).write_text("".join(f"{t.name}\n" for t in suite.train), encoding="utf-8")
    (out / HELD_OUT_LIST).write_text("".join(f"{t.name}\n" for t in suite.held_out), encoding="utf-8")
    train, held = [write(t) for t in suite.train], [write(t) for t in suite.held_out]
    return dataclasses.replace(suite, train=train, held_out=held)


def _instances(spec: SuiteTaskSpec, name: str, seed: int, count: int) -> list[Instance]:
    """`count` instances with distinct inputs, from the task's own random stream."""
    rng = random.Random(f"{seed}/{name}")
    number = name.split("_", 1)[0]
    instances, seen = [], set()
    for _ in range(count * 50):
        text, outputs = spec.make(rng)
        if text not in seen:
            seen.add(text)
            instances.append(Instance(id=f"{number}-{seed}-{len(instances)}", input=text, outputs=outputs))
        if len(instances) == count:
            return instances
    raise ValueError(f"{name}: could not draw {count} distinct inputs (got {len(instances)})")


def _sni_record(spec: SuiteTaskSpec, task: SNITask, seed: int) -> dict:
    """The task in SNI's schema, key for key; the two positive examples come from a separate stream."""
    examples_rng = random.Random(f"{seed}/{task.name}/examples")
    examples = [spec.make(examples_rng) for _ in range(2)]
    return {
        "Contributors": ["t2l-ray generated suite"],
        "Source": ["t2l_ray.data.suite"],
        "URL": [],
        "Categories": task.categories,
        "Reasoning": [],
        "Definition": [task.definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Synthetic"],
        "Positive Examples": [
            {"input": text, "output": outputs[0], "explanation": "The output applies the rule in the definition."}
            for text, outputs in examples
        ],
        "Negative Examples": [],
        "Instances": [{"id": i.id, "input": i.input, "output": i.outputs} for i in task.instances],
        "Instance License": ["Apache 2.0"],
    }
