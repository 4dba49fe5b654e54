import pytest

from guardrails.errors import InvalidInputError
from guardrails.jsonl import read_jsonl


def test_reads_objects_with_line_numbers(tmp_path):
    p = tmp_path / "ok.jsonl"
    p.write_text('{"a": 1}\n\n{"b": "é"}\n', encoding="utf-8")
    assert read_jsonl(p) == [(1, {"a": 1}), (3, {"b": "é"})]


@pytest.mark.parametrize("content, match", [
    (b'{"a": 1}\n{oops\n', ":2: invalid JSON"),
    (b'[1, 2]\n', ":1: expected a JSON object"),
    (b'"text"\n', ":1: expected a JSON object"),
    (b'{"a": "\xff"}\n', "cannot read"),
])
def test_bad_files_are_typed_errors_naming_the_line(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(InvalidInputError, match=match):
        read_jsonl(p)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_a_utf8_bom_is_not_data(tmp_path):
    """Files saved by Windows tools start with a BOM; CRLF line ends were already accepted."""
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\r\n{"b": 2}\r\n')
    assert read_jsonl(f) == [(1, {"a": 1}), (2, {"b": 2})]


def test_a_deeply_nested_line_is_a_typed_error(tmp_path):
    """json.loads raises RecursionError (not JSONDecodeError) past ~1000 levels: every eval command crashed."""
    p = tmp_path / "deep.jsonl"
    p.write_text('{"a": 1}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=":2: JSON nested too deeply"):
        read_jsonl(p)


def test_line_separators_inside_strings_and_windows_line_ends(tmp_path):
    """json.dumps(..., ensure_ascii=False) leaves U+2028, U+2029 and U+0085 raw inside strings; they are not line
    ends (str.splitlines() split there, so a valid file was refused). CRLF files read as before."""
    p = tmp_path / "ls.jsonl"
    p.write_bytes('{"text": "a\u2028b\u2029c\u0085d"}\r\n\r\n{"n": 2}\r\n'.encode())
    assert read_jsonl(p) == [(1, {"text": "a\u2028b\u2029c\u0085d"}), (3, {"n": 2})]


def test_an_integer_too_long_to_parse_is_a_typed_error(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text('{"n": ' + "9" * 5000 + "}\n")
    with pytest.raises(InvalidInputError, match="big.jsonl:1"):
        read_jsonl(p)
