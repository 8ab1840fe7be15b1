"""`simpletasks local`: what it says about the services it cannot start."""

from __future__ import annotations

import socket

import pytest

from simpletasks import local


def test_missing_gcp_emulators_are_named_each_with_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("simpletasks.emulators.gcs.find_binary", lambda: None)
    monkeypatch.setattr("simpletasks.emulators.pubsub.find_launcher", lambda: None)
    missing = local.missing_gcp_emulators()
    text = "; ".join(missing)
    assert "fake-gcs-server" in text and "simpletasks[gcp-local]" in text
    assert "Pub/Sub emulator" in text and "pubsub-emulator" in text
    lines: list[str] = []
    with pytest.raises(local.MissingDependency, match="--cloud gcp needs"):
        local.gcp_backends(None, lines.append)  # type: ignore[arg-type]


def test_rabbitmq_note_says_it_is_not_started() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert "not started by --stack and none answers" in local.rabbitmq_note(port=port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        note = local.rabbitmq_note(port=server.getsockname()[1])
    assert "not started by --stack) answers" in note and "amqp://guest:guest@" in note
