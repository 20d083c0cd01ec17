"""Property tests of every parser that reads network input: numbers, Content-Length framing,
Range and Content-Range, response heads and chunk sizes, and supernode answers. Each either
returns a value that obeys its contract or refuses with its own error, whatever the input."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dfget.config import Node
from dfget.net.client import Connection, _chunk_size
from dfget.net.endpoint import Endpoint
from dfget.net.heads import WireError
from dfget.net.server import framing_problem
from dfget.protocol.messages import PieceTask, Registration, SupernodeError
from dfget.protocol.pieces import MAX_PIECE_SIZE, MiB
from dfget.protocol.ranges import PieceRange, parse_content_range, parse_unsatisfied_range
from dfget.protocol.wire import decimal
from dfget.supernode.fileserver import Unsatisfiable, byte_range
from tests.support.helpers import RawServer

ODD_DIGITS = "0123456789²³٣߃ _+-x.e"
FUZZ = settings(max_examples=300, deadline=None)


@given(st.text(alphabet=ODD_DIGITS, max_size=25) | st.text(max_size=25))
@example("9" * 5000)
@example("1_0")
@example("٣")
def test_decimal_takes_only_plain_ascii_digits(text: str) -> None:
    value = decimal(text)
    plain = 0 < len(text) <= 18 and all(c in "0123456789" for c in text)
    assert (value is not None) == plain
    if plain:
        assert value == int(text)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    lengths=st.lists(st.text(alphabet=ODD_DIGITS, max_size=6), max_size=3),
    chunked=st.booleans(),
)
def test_framing_is_accepted_only_when_beyond_doubt(
    method: str, lengths: list[str], chunked: bool
) -> None:
    problem = framing_problem(method, lengths, chunked)
    single = len(lengths) == 1 and decimal(lengths[0].strip()) is not None
    body = single and decimal(lengths[0].strip()) != 0
    clear = not chunked and (not lengths or (single and not (body and method != "POST")))
    assert (problem is None) == clear, (method, lengths, chunked, problem)


@FUZZ
@given(value=st.text(alphabet="bytes=0123456789-, ²٣", max_size=30), size=st.integers(0, 10**12))
@example(value="bytes=0-" + "9" * 5000, size=10)
def test_download_port_ranges_stay_inside_the_file(value: str, size: int) -> None:
    try:
        parsed = byte_range(value, size)
    except Unsatisfiable:
        return
    if parsed is not None:
        start, end = parsed
        assert 0 <= start <= end < size


@FUZZ
@given(st.text(alphabet="bytes 0123456789-/*²٣_", max_size=40))
@example("bytes 0-9/10")
@example("bytes 0-" + "9" * 5000 + "/*")
def test_content_range_is_a_consistent_span(value: str) -> None:
    parsed = parse_content_range(value)
    if parsed is not None:
        first, last, total = parsed
        assert 0 <= first <= last and (total is None or last < total)


@given(st.text(alphabet="bytes */0123456789-x", max_size=20) | st.text(max_size=20))
@example("bytes */1000")
@example("bytes 0-9/1000")
@example("bytes */" + "9" * 5000)
def test_unsatisfied_range_gives_a_plain_total_or_nothing(value: str) -> None:
    total = parse_unsatisfied_range(value)
    if total is not None:
        assert value.strip().lower().startswith("bytes */")
        assert total == int(value.strip().rpartition("/")[2])
    if value == "bytes */1000":
        assert total == 1000


@FUZZ
@given(st.binary(max_size=24))
@example(b"0x10\r\n")
@example(b"1_0\r\n")
@example(b"-5\r\n")
@example(b"f" * 40 + b"\r\n")
def test_chunk_size_lines(line: bytes) -> None:
    try:
        size = _chunk_size(line)
    except WireError:
        return
    text = line.split(b";", 1)[0].strip()
    assert size == int(text, 16) and 0 <= size < 16**15
    assert all(c in b"0123456789abcdefABCDEF" for c in text)


class OneShotServer(RawServer):
    """Answers every connection with ``reply`` and closes; for response-head fuzzing."""

    def __init__(self) -> None:
        self.reply = b""
        super().__init__(self._reply)

    def _reply(self, conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(self.reply)


@pytest.fixture(scope="module")
def one_shot() -> Iterator[OneShotServer]:
    server = OneShotServer()
    yield server
    server.close()


HEAD_PARTS = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 206 Partial Content",
        b"HTTP/1.0 2000 x",
        b"HTTP/1.1 ",
        b"HTTP/1.1 \xb2\xb2\xb2 x",
        b"ICY 200 OK",
        b"Content-Length: 5",
        b"Content-Length: 1_0",
        b"Content-Length: -1",
        b"Content-Length: " + b"9" * 5000,
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        b"X: \x00\xff",
        b": empty name",
        b"no colon",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(HEAD_PARTS | st.binary(max_size=30), min_size=1, max_size=6),
    body=st.binary(max_size=40),
)
def test_any_response_head_is_a_response_or_a_wire_error(
    one_shot: OneShotServer, lines: list[bytes], body: bytes
) -> None:
    one_shot.reply = b"\r\n".join(lines) + b"\r\n\r\n" + body
    try:
        conn = Connection(Endpoint("http", "127.0.0.1", one_shot.port, "/"), timeout=5)
    except OSError:
        pytest.fail("the test server did not accept")
    try:
        response = conn.request("GET", "/")
        buffer = bytearray(64)
        while response.readinto(memoryview(buffer)):
            pass
        assert 100 <= response.status <= 999
    except (WireError, OSError):
        pass
    finally:
        conn.close()


FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.lists(st.integers(), max_size=2)
)
NODE = Node("127.0.0.1")


@FUZZ
@given(
    data=st.fixed_dictionaries(
        {},
        optional={
            "taskId": FIELD_VALUES | st.just("a" * 64),
            "fileLength": FIELD_VALUES | st.integers(-1, 2**40),
            "pieceSize": FIELD_VALUES | st.sampled_from([4 * MiB, 4 * MiB + 1, 16 * MiB, 6]),
            "cdnSource": FIELD_VALUES | st.sampled_from(["supernode", "source"]),
        },
    )
)
def test_registration_answers_are_valid_or_a_supernode_error(data: dict[str, object]) -> None:
    try:
        registration = Registration.from_answer(data, NODE)
    except SupernodeError:
        return
    assert len(registration.task_id) == 64 and 6 <= registration.piece_size <= MAX_PIECE_SIZE
    assert registration.cdn_source == "source" or registration.piece_size % MiB == 0
    assert -1 <= registration.file_length <= 2**50


REGISTERED = Registration(NODE, "a" * 64, 10 * 4 * MiB, 4 * MiB, "source")


@FUZZ
@given(
    item=st.fixed_dictionaries(
        {},
        optional={
            "range": FIELD_VALUES | st.sampled_from(["0-4194303", "4194304-8388607", "0-1"]),
            "pieceNum": FIELD_VALUES | st.integers(0, 12),
            "pieceSize": FIELD_VALUES | st.just(4 * MiB),
            "pieceMd5": FIELD_VALUES,
            "cid": FIELD_VALUES,
            "peerIp": FIELD_VALUES,
            "peerPort": FIELD_VALUES | st.integers(0, 70000),
            "path": FIELD_VALUES,
        },
    )
)
def test_piece_tasks_are_valid_or_a_supernode_error(item: dict[str, object]) -> None:
    try:
        task = PieceTask.from_json(item, REGISTERED)
    except SupernodeError:
        return
    assert task.piece_size == REGISTERED.piece_size and 0 <= task.piece_num < 10
    assert task.range == str(PieceRange.of_piece(task.piece_num, task.piece_size))
    assert 0 <= task.peer_port <= 65535
