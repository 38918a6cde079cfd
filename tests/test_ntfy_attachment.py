"""ntfyproto's attachment rules, without I/O: which body is a file (ntfy's
``handlePublishBody`` order), the ``attachment`` object of a stored file, type sniffing and
file names that are safe to save under."""

from __future__ import annotations

import pytest

from agent.ntfyproto import NtfyError
from agent.ntfyproto.attachment import MAX_NAME, disposition, file_attachment, safe_name, sniff
from agent.ntfyproto.fields import Request
from agent.ntfyproto.publish import body_is_file, parse_json_publish, parse_publish

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.mark.parametrize(
    ("headers", "query", "head", "truncated", "expected"),
    [
        ({"Filename": "a.txt"}, {}, b"hello", False, True),  # case 4: a name makes it a file
        ({}, {"f": "a.txt"}, b"hello", False, True),
        ({"X-Filename": "a.txt", "X-Attach": "https://x.example/a"}, {}, b"hi", False, False),
        ({}, {}, b"hello", False, False),  # case 6: short UTF-8 text is the message
        ({}, {}, b"\xff\xfe\x00", False, True),  # case 7: not UTF-8
        ({}, {}, b"a" * 10, True, True),  # case 7: above the message limit
        ({"Filename": "a.bin", "X-Poll-ID": "abc"}, {}, b"\xff", False, False),  # case 1
        ({"Filename": "a.bin"}, {"up": "1"}, b"\xff", False, False),  # case 2
        ({"Template": "yes"}, {}, b"a" * 10, True, False),  # case 5
    ],
)
def test_which_body_is_a_file_follows_ntfys_order(
    headers: dict[str, str], query: dict[str, str], head: bytes, truncated: bool, expected: bool
) -> None:
    assert body_is_file(Request(headers, query), head, truncated=truncated) is expected


def test_a_file_publish_keeps_every_other_field_and_defaults_the_message() -> None:
    req = Request({"Filename": "door.jpg", "Title": "Door", "Priority": "high"})
    parsed = parse_publish(req, b"", file=True)
    assert parsed.file and parsed.fields["attachment"] == {"name": "door.jpg"}
    done = file_attachment(parsed.fields, mime="image/jpeg", ext=".jpg", size=12,
                           expires=100, url="http://r/file/abc.jpg")  # fmt: skip
    assert done["attachment"] == {"name": "door.jpg", "type": "image/jpeg", "size": 12,
                                  "expires": 100, "url": "http://r/file/abc.jpg"}  # fmt: skip
    assert done["message"] == "You received a file: door.jpg"
    assert done["title"] == "Door" and done["priority"] == 4


def test_a_file_publish_without_a_name_is_named_after_its_type() -> None:
    parsed = parse_publish(Request({}), b"", file=True)
    done = file_attachment(parsed.fields, mime="application/octet-stream", ext=".bin", size=3,
                           expires=1, url="u")  # fmt: skip
    assert done["attachment"]["name"] == "attachment.bin"


def test_a_file_publish_still_refuses_bad_options_before_the_upload() -> None:
    with pytest.raises(NtfyError) as err:
        parse_publish(Request({"Filename": "a", "Priority": "9"}), b"", file=True)
    assert err.value.code == 40007


def test_a_json_publish_with_filename_and_no_url_stores_its_message_as_the_file() -> None:
    req = Request({}, max_value=4096)
    body = b'{"topic": "t", "message": "file text", "filename": "notes.txt"}'
    topic, parsed = parse_json_publish(req, body, max_size=8192, files=True)
    assert topic == "t" and parsed.file and parsed.upload == b"file text"
    assert parsed.fields["attachment"] == {"name": "notes.txt"}
    # a server that stores no files refuses it, as ntfy without a cache dir does
    with pytest.raises(NtfyError) as err:
        parse_json_publish(Request({}, max_value=4096), body, max_size=8192)
    assert err.value.code == 40014


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b.txt", "a_b.txt"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1.log", "_com1.log"),
        ("console.txt", "console.txt"),
        ("..", ""),
        ("  report.pdf. ", "report.pdf"),
        ('a"b<c>.txt', "a_b_c_.txt"),
    ],
)
def test_file_names_are_safe_to_save_under(given: str, expected: str) -> None:
    assert safe_name(given) == expected


def test_a_300_character_name_is_cut_keeping_its_extension() -> None:
    name = safe_name("x" * 300 + ".jpeg")
    assert len(name) == MAX_NAME and name.endswith(".jpeg")


def test_sniffing_trusts_the_content_never_the_name() -> None:
    assert sniff(PNG, "evil.exe") == ("image/png", ".png")
    assert sniff(b"MZ\x90\x00" + b"\x00" * 60, "cat.png")[1] == ".exe"
    assert sniff("héllo".encode(), "a.png") == ("text/plain; charset=utf-8", ".txt")
    assert sniff(b"\x00\x01\x02\xff", "a.png") == ("application/octet-stream", ".bin")
    assert sniff(b"PK\x03\x04" + b"\x00" * 40, "app.apk")[1] == ".apk"  # ntfy's one exception


def test_media_is_shown_inline_and_anything_else_is_a_download() -> None:
    assert disposition("door.jpg", "image/jpeg") == 'inline; filename="door.jpg"'
    assert disposition("r.pdf", "application/pdf") == 'attachment; filename="r.pdf"'
    assert disposition('a"b', "text/plain").startswith('attachment; filename="a\\"b"')
    assert "filename*=UTF-8''%C3%A9.txt" in disposition("é.txt", "text/plain")
