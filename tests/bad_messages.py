"""Bad task messages (hypothesis strategies) and a guarded daemon run to feed them to.

Every strategy here yields a message body that a queue accepts (SQS's character rules) but
that no daemon can run: not JSON, the wrong schema, keys that climb out of their base
directory, unknown task types, payloads their type rejects, or inputs that do not exist.
:func:`run_guarded` runs a daemon over such bodies mixed with good ones and stops it if it
runs away (more receives than the bodies could ever need) or outlives its time limit, so a
framework bug fails a test quickly instead of hanging it.
"""

from __future__ import annotations

import json
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from simpletasks.daemon import DaemonService
from simpletasks.queues import QueueService
from simpletasks.registry import TaskRegistry
from simpletasks.reports import body_for_report
from simpletasks.settings import DaemonSettings

#: Characters a queue accepts in a body (no lone surrogates, U+FFFE/U+FFFF, or control
#: characters other than tab, newline and carriage return).
QUEUE_CHARS = st.characters(
    exclude_categories=("Cs",), exclude_characters="\ufffe\uffff", min_codepoint=0x20
) | st.sampled_from("\t\n\r")
#: Strings that make people nervous: right-to-left marks, emoji, combining and zero-width
#: characters, and NUL/control characters (escaped in JSON text, so a queue takes them).
ODD = [
    "\u202e\u05e9\u05dc\u05d5\u05dd",  # RTL override + Hebrew
    "\U0001f600\U0001f4a9\u200d\U0001f469",  # emoji, zero-width joiner
    "e\u0301\u0327",  # combining marks
    "\u200b\ufeff",  # zero-width space, BOM
    "\x00",
    "\x01\x1f\x7f",
    "\u2028\u2029",  # JSON-legal line separators
    "NO_OP\x00",
    "..\u2215..",  # division slash: looks like a separator, is not one
]
odd_text = st.sampled_from(ODD) | st.text(QUEUE_CHARS, max_size=12)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)

#: Key components that must never be accepted, and some harmless ones to mix with them.
BAD_PARTS = ["..", ".", "", "a\\..", "..\\b", "\x00", "a\x00b"]
GOOD_PARTS = ["a", "0_input", "x.dat", "\u202e", "\U0001f600", "..a", "a..", "...", " "]


@st.composite
def escaping_keys(draw: st.DrawFn) -> str:
    """A key with at least one forbidden part: ``..``, ``.``, empty, backslash, NUL, or ``/``
    at the start."""
    parts = draw(st.lists(st.sampled_from(GOOD_PARTS), max_size=3))
    parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(BAD_PARTS)))
    key = "/".join(parts)
    if draw(st.booleans()):
        key = "/" + key
    return key


def _message(
    *,
    task_id: Any = 1,
    name: Any = "NO_OP",
    base: Any = "bad",
    inputs: Any = (),
    payload: Any = None,
) -> dict[str, Any]:
    return {
        "basic_info": {
            "id": task_id,
            "name": name,
            "base_directory": base,
            "inputs": list(inputs) if isinstance(inputs, tuple) else inputs,
        },
        "payload_info": payload,
    }


def _not(*types: type) -> st.SearchStrategy[Any]:
    return json_values.filter(lambda v: not isinstance(v, types))


@st.composite
def wrong_types(draw: st.DrawFn) -> dict[str, Any]:
    """A message with one field of the wrong type, missing, or one field too many.

    Unknown top-level fields are allowed (SimpleTasks.jl ignores them); unknown fields inside
    ``basic_info`` are not, and neither is a ``job_id`` that is not a non-empty string.
    """
    field_name = draw(
        st.sampled_from(
            ["basic_info", "id", "name", "base", "inputs", "input", "missing", "extra", "job_id"]
        )
    )
    message = _message(inputs=("0_input/1.dat",))
    info = message["basic_info"]
    if field_name == "basic_info":
        message["basic_info"] = draw(_not(dict))
    elif field_name == "id":
        info["id"] = draw(_not(int) | st.booleans())
    elif field_name == "name":
        info["name"] = draw(_not(str) | st.sampled_from(["", " ", "\t\n"]))
    elif field_name == "base":
        info["base_directory"] = draw(_not(str))
    elif field_name == "inputs":
        info["inputs"] = draw(_not(list))
    elif field_name == "input":
        info["inputs"] = ["0_input/1.dat", draw(_not(str))]
    elif field_name == "missing":
        del info[draw(st.sampled_from(["id", "name"]))]
    elif field_name == "job_id":
        message["job_id"] = draw(_not(str) | st.sampled_from(["", " "]))
    else:
        extra = draw(odd_text.filter(lambda k: k not in info))
        info[extra] = draw(json_values)
    return message


def dumps(value: Any) -> str:
    """JSON text as a scheduler would send it (non-ASCII kept, so a queue sees it raw)."""
    return json.dumps(value, ensure_ascii=False)


#: Bodies that are not JSON, or JSON of the wrong shape.
garbage = st.text(QUEUE_CHARS, min_size=1) | json_values.filter(
    lambda v: not (isinstance(v, dict) and "basic_info" in v)
).map(dumps)
#: Messages whose keys escape their base directory (inputs or base_directory).
traversal = st.one_of(
    st.lists(escaping_keys(), min_size=1, max_size=3).map(lambda ks: _message(inputs=ks)),
    # A last good part, so that the trailing "/" a base directory may have cannot hide it.
    escaping_keys().map(lambda k: _message(base=k + "/z", inputs=("x.dat",))),
).map(dumps)
#: Well-formed messages naming a task type nobody registered.
unknown_task = (
    st.text(QUEUE_CHARS, min_size=1)
    .filter(lambda n: n.strip() and n not in ("NO_OP", "SLEEP"))
    .map(lambda n: dumps(_message(name=n)))
)
#: SLEEP messages whose payload its dataclass rejects.
bad_payload = json_values.map(
    lambda p: dumps(
        _message(name="SLEEP", payload={**p, "seconds": "x"} if isinstance(p, dict) else p)
    )
)
#: Well-formed NO_OP messages whose inputs are not in the bucket (they fail in prepare).
missing_inputs = st.lists(
    st.text(string.ascii_letters + "\u00e9\u202e\U0001f600", min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(lambda names: dumps(_message(base="missing", inputs=[f"{n}.dat" for n in names])))

BAD_FAMILIES: dict[str, st.SearchStrategy[str]] = {
    "garbage": garbage,
    "wrong_types": wrong_types().map(dumps),
    "traversal": traversal,
    "unknown_task": unknown_task,
    "bad_payload": bad_payload,
    "missing_inputs": missing_inputs,
}
bad_bodies = st.one_of(*BAD_FAMILIES.values())


def canonical(raw_or_parsed: Any) -> str:
    """One string per report body, to match reports to the bodies that caused them."""
    return json.dumps(raw_or_parsed, sort_keys=True, ensure_ascii=True)


@dataclass
class Outcome:
    """What a guarded daemon run did."""

    stats: Any
    errors: list[dict[str, Any]]
    done: list[dict[str, Any]]
    runaway: str = ""  # why the run was stopped early ("" = it finished by itself)
    left: tuple[int, int] = (0, 0)  # (visible, in flight) on the task queue afterwards
    seconds: float = 0.0
    final_by_body: Counter[str] = field(default_factory=Counter)

    def expected_final(self, bodies: list[str]) -> Counter[str]:
        """The final reports each of ``bodies`` should have produced (one each)."""
        return Counter(canonical(body_for_report(b)) for b in bodies)


def drain(queue: QueueService) -> list[dict[str, Any]]:
    """Receive and ack every visible message of ``queue``; return the parsed bodies."""
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        batch = queue.receive(10, wait_seconds=0.1 if empty else 0.0, lease_seconds=60)
        empty = 0 if batch else empty + 1
        out += [json.loads(m.body) for m in batch]
        if batch:
            queue.ack_many(batch)
    return out


def run_guarded(
    *,
    queue: QueueService,
    error_queue: QueueService,
    done_queue: QueueService,
    registry: TaskRegistry,
    datasource: Any,
    bodies: list[str],
    settings: DaemonSettings,
    timeout: float = 20.0,
) -> Outcome:
    """Send ``bodies``, run a burst daemon over them and collect its reports.

    The daemon is stopped early if it receives more than every body could need (each body
    ``settings.max_attempts`` times, plus slack for at-least-once redelivery), or after
    ``timeout`` seconds; :attr:`Outcome.runaway` then says why.
    """
    for i in range(0, len(bodies), 10):
        queue.send_batch(bodies[i : i + 10])
    daemon = DaemonService(
        queue=queue,
        registry=registry,
        datasource=datasource,
        error_queue=error_queue,
        done_queue=done_queue,
        settings=settings,
    )
    limit = len(bodies) * settings.max_attempts + 5
    started = time.monotonic()
    thread = threading.Thread(target=daemon.run, name="guarded-daemon", daemon=True)
    thread.start()
    runaway = ""
    while thread.is_alive():
        thread.join(0.02)
        if daemon.stats.received > limit:
            runaway = f"received {daemon.stats.received} > {limit} (retrying forever?)"
        elif time.monotonic() - started > timeout:
            runaway = f"still running after {timeout:.0f} s"
        if runaway:
            daemon.stop()
            daemon.stop()
            thread.join(10)
            break
    seconds = time.monotonic() - started
    counts = queue.counts()
    errors, done = drain(error_queue), drain(done_queue)
    final = Counter(canonical(r["body"]) for r in errors if r["final"])
    return Outcome(
        daemon.stats,
        errors,
        done,
        runaway,
        (counts.visible, counts.in_flight),
        seconds,
        final,
    )
