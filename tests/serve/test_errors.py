"""serve/errors.py by itself: pydantic's errors about a request body in the service's words."""

from serve.errors import validation_message


def test_invalid_json_names_the_character_once():
    error = {"type": "json_invalid", "loc": ("body", 14), "ctx": {"error": "Invalid control character at"}}
    assert validation_message(error, []) == (
        400,
        "invalid_json",
        "body",
        "body: not valid JSON (Invalid control character at character 14)",
    )
