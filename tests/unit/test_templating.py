"""``{{ name }}`` substitution: finding, rendering, raw values and missing variables."""

from __future__ import annotations

import pytest

from llm_orchestrator.workflows.templating import (
    TemplateError,
    find_variables,
    format_value,
    render,
    render_data,
    render_value,
)


def test_find_variables_lists_each_name_once_in_order_of_appearance() -> None:
    text = "{{ b }} and {{a}} then {{b}} and {{  c_1  }}"

    assert find_variables(text) == ["b", "a", "c_1"]


@pytest.mark.parametrize(
    "text",
    ["{{ a.b }}", "{{a b}}", "{{}}", "{{ 1abc }}", "{ {a} }", "{{a + b}}", "{{ a | upper }}"],
)
def test_anything_but_a_plain_name_is_not_a_placeholder(text: str) -> None:
    assert find_variables(text) == []
    assert render(text, {}) == text


def test_render_substitutes_strings_as_they_are() -> None:
    rendered = render("Analyze: {{ input }}!", {"input": "Great {{product}}"})

    # The substituted value is not rendered again, so user input cannot inject variables.
    assert rendered == "Analyze: Great {{product}}!"


def test_render_formats_non_string_values_as_json() -> None:
    values = {"n": 3, "f": 0.5, "flag": True, "none": None, "obj": {"k": "v", "n": [1, 2]}}

    rendered = render("{{n}} {{f}} {{flag}} {{none}} {{obj}}", values)

    assert rendered == '3 0.5 true null {"k":"v","n":[1,2]}'


def test_render_puts_documents_one_per_line_using_their_text() -> None:
    docs = [
        {"id": "1", "score": 0.9, "text": "Paris is the capital of France."},
        {"id": "2", "content": "The Seine flows through Paris."},
        {"id": "3", "metadata": {"text": "Lyon is in France."}},
        {"id": "4", "score": 0.1},
        "a plain string chunk",
    ]

    rendered = render("Context:\n{{docs}}", {"docs": docs})

    assert rendered == (
        "Context:\n"
        "Paris is the capital of France.\n"
        "The Seine flows through Paris.\n"
        "Lyon is in France.\n"
        '{"id":"4","score":0.1}\n'
        "a plain string chunk"
    )


def test_a_list_of_numbers_renders_as_json_not_one_per_line() -> None:
    assert format_value([0.1, 0.2]) == "[0.1,0.2]"


def test_non_ascii_text_stays_readable() -> None:
    assert format_value({"q": "café"}) == '{"q":"café"}'


def test_missing_variable_raises_template_error_naming_it() -> None:
    with pytest.raises(TemplateError) as caught:
        render("{{present}} {{absent}} {{gone}}", {"present": "x"})

    assert isinstance(caught.value, ValueError)
    assert caught.value.missing == ["absent", "gone"]
    assert caught.value.variable == "absent"
    assert "'absent'" in str(caught.value) and "'gone'" in str(caught.value)


def test_render_value_returns_the_raw_value_of_a_whole_field_placeholder() -> None:
    embedding = [0.1, 0.2, 0.3]

    assert render_value("{{query_embedding}}", {"query_embedding": embedding}) is embedding
    assert render_value("  {{ query_embedding }} ", {"query_embedding": embedding}) is embedding


def test_render_value_renders_text_when_the_field_is_more_than_one_placeholder() -> None:
    assert render_value("q: {{q}}", {"q": [1, 2]}) == "q: [1,2]"
    assert render_value("{{a}}{{b}}", {"a": "x", "b": "y"}) == "xy"


def test_render_value_raises_for_a_missing_whole_field_variable() -> None:
    with pytest.raises(TemplateError, match="'vec'"):
        render_value("{{vec}}", {})


def test_render_data_renders_strings_nested_in_a_filter() -> None:
    data = {"tenant": "{{tenant}}", "tags": ["{{tag}}", "fixed"], "year": {"$gte": 2020}}

    rendered = render_data(data, {"tenant": "acme", "tag": ["a", "b"]})

    assert rendered == {"tenant": "acme", "tags": [["a", "b"], "fixed"], "year": {"$gte": 2020}}
