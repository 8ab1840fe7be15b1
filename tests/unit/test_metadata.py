"""Configuration from instance metadata, read from a fake GCE/EC2 metadata server."""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from plugins.metadata import FakeMetadataServer

from simpletasks.buckets import open_bucket
from simpletasks.cli import main
from simpletasks.emulators import free_port
from simpletasks.errors import ConfigError
from simpletasks.metadata import (
    OPTIONS,
    REQUIRED,
    Ec2Metadata,
    GceMetadata,
    InstanceConfig,
    MetadataServer,
    open_metadata,
    read_config,
)
from simpletasks.queues import open_queue
from simpletasks.scheduler import schedule
from simpletasks.tasks.noop import make_example_job

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"

GOOD = {
    "task-queue": "sqs://tasks",
    "error-queue": "sqs://errors",
    "done-queue": "sqs://done",
    "bucket-name": "my-bucket",
    "cache-directory": "/var/cache/st",
    "poll-frequency-seconds": "2.5",
    "concurrency": "4",
    "task-types": "mytasks:Threshold  other.mod:Task_2",
}


def server_for(fake: FakeMetadataServer, flavour: str, values: dict[str, str]) -> MetadataServer:
    """Put ``values`` where ``flavour`` keeps them and return a client for the fake."""
    if flavour == "gce":
        fake.data.gce_instance.update(values)
        return GceMetadata(fake.host)
    fake.data.ec2_tags.update(values)
    return Ec2Metadata(fake.endpoint)


# -- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(("flavour", "scheme"), [("gce", "gs"), ("ec2", "s3")])
def test_reads_and_parses_every_attribute(
    metadata_server: FakeMetadataServer, flavour: str, scheme: str
) -> None:
    values = {k: f" {v}\n" for k, v in GOOD.items()}  # surrounding blanks are ignored
    config = read_config(server_for(metadata_server, flavour, values))
    assert config == InstanceConfig(
        flavour=flavour,
        task_queue="sqs://tasks",
        error_queue="sqs://errors",
        done_queue="sqs://done",
        bucket_name=f"{scheme}://my-bucket",
        cache_directory="/var/cache/st",
        poll_frequency_seconds=2.5,
        concurrency=4,
        task_types=("mytasks:Threshold", "other.mod:Task_2"),
        aws_region="us-east-1" if flavour == "ec2" else None,
    )
    assert config.options() == {
        "--queue": "sqs://tasks",
        "--error-queue": "sqs://errors",
        "--done-queue": "sqs://done",
        "--bucket": f"{scheme}://my-bucket",
        "--cache-dir": "/var/cache/st",
        "--poll-frequency": 2.5,
        "--concurrency": 4,
        "--task": ("mytasks:Threshold", "other.mod:Task_2"),
    }


@pytest.mark.parametrize("flavour", ["gce", "ec2"])
def test_optional_attributes_may_be_missing_and_urls_are_kept(
    metadata_server: FakeMetadataServer, flavour: str
) -> None:
    values = {
        "task-queue": "file:///q/tasks",
        "error-queue": "mem://errors",
        "bucket-name": "s3://other/prefix",
    }
    config = read_config(server_for(metadata_server, flavour, values))
    assert config.options() == {
        "--queue": "file:///q/tasks",
        "--error-queue": "mem://errors",
        "--bucket": "s3://other/prefix",
    }


def test_gce_falls_back_to_project_attributes(metadata_server: FakeMetadataServer) -> None:
    metadata_server.data.gce_project.update(GOOD, concurrency="8")
    metadata_server.data.gce_instance["concurrency"] = "2"
    config = read_config(GceMetadata(metadata_server.host))
    assert config.concurrency == 2  # the instance wins
    assert config.task_queue == "sqs://tasks"  # from the project


def test_gce_rejects_a_server_that_is_not_a_gce_metadata_server(
    metadata_server: FakeMetadataServer,
) -> None:
    metadata_server.data.gce_instance["task-queue"] = "sqs://tasks"
    metadata_server.data.gce_flavor_header = False
    with pytest.raises(ConfigError, match="without 'Metadata-Flavor: Google': not a GCE"):
        GceMetadata(metadata_server.host).get("task-queue")


def test_ec2_uses_one_imdsv2_token_and_the_fake_refuses_requests_without(
    metadata_server: FakeMetadataServer,
) -> None:
    read_config(server_for(metadata_server, "ec2", GOOD))
    methods = [method for method, _ in metadata_server.data.requests]
    assert methods[0] == "PUT" and methods.count("PUT") == 1
    url = f"{metadata_server.endpoint}/latest/meta-data/tags/instance/task-queue"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=2)
    assert info.value.code == 401


def test_ec2_gets_a_new_token_when_the_old_one_expired(
    metadata_server: FakeMetadataServer,
) -> None:
    server = server_for(metadata_server, "ec2", GOOD)
    assert server.get("concurrency") == "4"
    metadata_server.data.tokens.clear()
    assert server.get("task-queue") == "sqs://tasks"
    assert [m for m, _ in metadata_server.data.requests].count("PUT") == 2


def test_ec2_region_tag_overrides_the_instance_region_and_keys_are_ignored(
    metadata_server: FakeMetadataServer,
) -> None:
    tags = {**GOOD, "aws-region": "eu-west-1", "aws-access-key-id": KEY_ID}
    tags["aws-secret-access-key"] = SECRET
    config = read_config(server_for(metadata_server, "ec2", tags))
    assert config.aws_region == "eu-west-1"
    assert config.aws_access_key_id is None and config.aws_secret_access_key is None


def test_skipped_attributes_are_not_read_nor_required(
    metadata_server: FakeMetadataServer,
) -> None:
    server = server_for(metadata_server, "gce", {"error-queue": "sqs://e", "concurrency": "x"})
    config = read_config(server, skip={"task-queue", "bucket-name", "concurrency"})
    assert config.options() == {"--error-queue": "sqs://e"}
    paths = [path for _, path in metadata_server.data.requests]
    assert not any(p.endswith(("/task-queue", "/concurrency")) for p in paths)


# -- wrong input ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["gce", "ec2"])
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_missing_required_attribute_is_named(
    metadata_server: FakeMetadataServer, flavour: str, name: str
) -> None:
    values = {k: v for k, v in GOOD.items() if k != name}
    server = server_for(metadata_server, flavour, values)
    kind = "GCE instance attribute" if flavour == "gce" else "EC2 instance tag"
    with pytest.raises(ConfigError) as info:
        read_config(server)
    assert str(info.value).startswith(f"{kind} {name!r} is not set")
    assert str(info.value).endswith(f"set it, or pass {OPTIONS[name]}")


def test_ec2_says_when_instance_tags_are_not_in_the_metadata(
    metadata_server: FakeMetadataServer,
) -> None:
    server = server_for(metadata_server, "ec2", GOOD)
    metadata_server.data.ec2_tags_enabled = False
    with pytest.raises(ConfigError, match=r"'task-queue' is not readable: this instance does not"):
        read_config(server)
    with pytest.raises(ConfigError, match="--instance-metadata-tags enabled"):
        read_config(server)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("task-queue", "my-queue", "is not a URL of the form scheme://"),
        ("task-queue", "nope://x", "expected a queue URL ("),
        ("error-queue", "  ", "it is empty"),
        ("done-queue", "sqs://", "expected a queue URL"),
        ("bucket-name", "My Bucket", "or a bucket name of lower-case letters"),
        ("bucket-name", "ftp://host/x", "expected a bucket URL"),
        ("bucket-name", "x", "or a bucket name"),
        ("cache-directory", "relative/cache", "expected an absolute path"),
        ("cache-directory", "~/cache", "expected an absolute path"),
        ("poll-frequency-seconds", "-1", "expected a number of seconds >= 0"),
        ("poll-frequency-seconds", "abc", "expected a number of seconds"),
        ("poll-frequency-seconds", "nan", "expected a number of seconds >= 0"),
        ("poll-frequency-seconds", "inf", "expected a number of seconds >= 0"),
        ("concurrency", "abc", "expected a whole number >= 1"),
        ("concurrency", "0", "expected a whole number >= 1"),
        ("concurrency", "-2", "expected a whole number >= 1"),
        ("concurrency", "1.5", "expected a whole number >= 1"),
        ("aws-region", "Mars", "expected an AWS region such as us-east-1"),
        ("task-types", "mytasks.Threshold", "expected module:Class paths separated by spaces"),
        ("task-types", "a:B c:D:E", "not 'c:D:E'"),
    ],
)
@pytest.mark.parametrize("flavour", ["gce", "ec2"])
def test_a_malformed_value_is_named_with_what_was_expected(
    metadata_server: FakeMetadataServer, flavour: str, name: str, value: str, expected: str
) -> None:
    server = server_for(metadata_server, flavour, {**GOOD, name: value})
    with pytest.raises(ConfigError) as info:
        read_config(server)
    message = str(info.value)
    assert f"{name!r} = {value!r} is malformed: " in message
    assert expected in message


@pytest.mark.parametrize("flavour", ["gce", "ec2"])
def test_no_metadata_server_is_a_clear_error(flavour: str) -> None:
    server = open_metadata(flavour, endpoint=f"127.0.0.1:{free_port()}")
    cloud = flavour.upper()
    with pytest.raises(ConfigError, match=f"cannot reach the {cloud} metadata server at http://"):
        read_config(server)
    with pytest.raises(ConfigError, match=f"not on {cloud}?"):
        read_config(server)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flavour", ["gce", "ec2"])
def test_a_silent_metadata_server_times_out_quickly(silent_port: int, flavour: str) -> None:
    server = open_metadata(flavour, endpoint=f"127.0.0.1:{silent_port}", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"\(timed out\); not on"):
        read_config(server)
    assert time.monotonic() - started < 2


def test_default_timeout_is_short_and_default_hosts_are_the_clouds() -> None:
    gce, ec2 = open_metadata("gce"), open_metadata("ec2")
    assert gce.base_url == "http://metadata.google.internal"
    assert ec2.base_url == "http://169.254.169.254"
    assert gce.timeout == ec2.timeout == 2.0


def test_unknown_flavour() -> None:
    with pytest.raises(ConfigError, match="unknown metadata flavour 'azure'; expected one of"):
        open_metadata("azure")


# -- AWS keys in GCE metadata -------------------------------------------------------------


def test_gce_aws_keys_are_used_with_a_warning_and_never_shown(
    metadata_server: FakeMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metadata_server.data.gce_project.update(
        {"aws-access-key-id": KEY_ID, "aws-secret-access-key": SECRET, "aws-region": "eu-west-1"}
    )
    config = read_config(server_for(metadata_server, "gce", GOOD))
    assert (config.aws_access_key_id, config.aws_secret_access_key) == (KEY_ID, SECRET)
    assert "any process on this VM can read them" in caplog.text
    assert SECRET not in caplog.text and KEY_ID not in caplog.text
    assert SECRET not in repr(config) and SECRET not in str(config)

    assert config.aws_environment({}) == {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    # What the environment sets wins over metadata.
    assert config.aws_environment({"AWS_REGION": "x", "AWS_ACCESS_KEY_ID": "y"}) == {}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"aws-access-key-id": KEY_ID}, "'aws-secret-access-key' is not set: set both AWS keys"),
        ({"aws-secret-access-key": SECRET}, "'aws-access-key-id' is not set: set both AWS keys"),
        (
            {"aws-access-key-id": KEY_ID, "aws-secret-access-key": f"{SECRET} {SECRET}"},
            "'aws-secret-access-key' is malformed: empty or contains spaces",
        ),
        (
            {"aws-access-key-id": " ", "aws-secret-access-key": SECRET},
            "'aws-access-key-id' is malformed: empty or contains spaces",
        ),
    ],
)
def test_bad_gce_aws_keys_are_named_but_not_shown(
    metadata_server: FakeMetadataServer,
    caplog: pytest.LogCaptureFixture,
    keys: dict[str, str],
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = server_for(metadata_server, "gce", {**GOOD, **keys})
    with pytest.raises(ConfigError) as info:
        read_config(server)
    assert expected in str(info.value)
    for text in (str(info.value), repr(info.value), caplog.text):
        assert SECRET not in text and KEY_ID not in text


# -- the command line -----------------------------------------------------------------------


def test_cli_a_flag_wins_over_metadata_and_metadata_over_environment(
    metadata_server: FakeMetadataServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metadata_server.data.gce_instance.update(
        {
            "task-queue": f"file://{tmp_path}/meta-tasks",
            "error-queue": f"file://{tmp_path}/meta-errors",
            "bucket-name": f"file://{tmp_path}/meta-bucket",
            "cache-directory": str(tmp_path / "meta-cache"),
            "concurrency": "3",
            "task-types": "simpletasks.tasks.noop:NoOpTask tasktypes:SleepTask",
        }
    )
    env = {
        **metadata_server.env(),
        "SIMPLETASKS_FROM_METADATA": "gce",
        "SIMPLETASKS_ERROR_QUEUE": f"file://{tmp_path}/env-errors",
        "SIMPLETASKS_DONE_QUEUE": f"file://{tmp_path}/env-done",
        "SIMPLETASKS_CONCURRENCY": "5",
        "SIMPLETASKS_CACHE_DIR": str(tmp_path / "env-cache"),
        "SIMPLETASKS_TASKS": "tasktypes:FailTask",
    }
    bucket = open_bucket(f"file://{tmp_path}/meta-bucket", create=True)
    for name in ("env-done", "meta-errors"):  # queues must exist before `run` (no auto-create)
        open_queue(f"file://{tmp_path}/{name}", create=True)
    tasks = open_queue(f"file://{tmp_path}/flag-tasks", create=True)
    schedule(tasks, make_example_job(bucket, n_files=3))
    args = ["run", "--queue", f"file://{tmp_path}/flag-tasks", "--burst", "--wait", "0"]
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    made = sorted(p.name for p in tmp_path.iterdir())
    # --queue from the flag; error queue, bucket, cache from metadata; done queue from env.
    assert made == ["env-done", "flag-tasks", "meta-bucket", "meta-cache", "meta-errors"]
    started = f"daemon on file://{tmp_path}/flag-tasks: tasks NO_OP, SLEEP, concurrency 3"
    assert started in caplog.text
    assert len(list(bucket.list("datasets/noop_dataset/0_output/"))) == 3
    assert open_queue(f"file://{tmp_path}/env-done").counts().visible == 2
    task_queue_read = any(p.endswith("/task-queue") for _, p in metadata_server.data.requests)
    assert not task_queue_read  # given on the command line: not even read


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--from-metadata", "gce"], {}, "attribute 'task-queue' is not set (on the instance"),
        (
            ["--from-metadata", "ec2", "--queue", "mem://q"],
            {},
            "EC2 instance tag 'error-queue' is not set; set it, or pass --error-queue",
        ),
        (["--from-metadata", "azure"], {}, "'azure' is not one of 'gce', 'ec2'"),
        (
            ["--from-metadata", "gce"],
            {"GCE_METADATA_HOST": "127.0.0.1:1"},
            "cannot reach the GCE metadata server at http://127.0.0.1:1",
        ),
        (["--queue", "mem://q"], {}, "--error-queue"),  # wording is the CLI's (test_cli.py)
    ],
)
def test_cli_metadata_errors_are_clear(
    metadata_server: FakeMetadataServer, args: list[str], env: dict[str, str], expected: str
) -> None:
    env = {**metadata_server.env(), **env}
    result = CliRunner().invoke(main, ["run", *args], env=env, catch_exceptions=False)
    assert result.exit_code != 0
    assert expected in result.output


def test_cli_puts_gce_aws_keys_in_the_environment_without_logging_them(
    metadata_server: FakeMetadataServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)  # also undoes what the CLI sets
    metadata_server.data.gce_instance.update(
        {
            "task-queue": f"file://{tmp_path}/tasks",
            "error-queue": f"file://{tmp_path}/errors",
            "bucket-name": f"file://{tmp_path}/bucket",
            "aws-access-key-id": KEY_ID,
            "aws-secret-access-key": SECRET,
            "aws-region": "ap-southeast-2",
        }
    )
    open_bucket(f"file://{tmp_path}/bucket", create=True)
    for name in ("tasks", "errors"):
        open_queue(f"file://{tmp_path}/{name}", create=True)
    args = ["run", "--from-metadata", "gce", "--burst", "--wait", "0"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args, env=metadata_server.env(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert os.environ["AWS_ACCESS_KEY_ID"] == KEY_ID
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert os.environ["AWS_DEFAULT_REGION"] == "ap-southeast-2"
    assert "any process on this VM can read them" in caplog.text
    for text in (result.output, caplog.text):
        assert SECRET not in text and KEY_ID not in text
