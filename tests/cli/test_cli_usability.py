"""The command line says what it did and why not (issue 14): typo'd queues, paused queues and
limits in ``info``, arguments that are not JSON, retries that move nothing, ``QUEUE/ID``
job references, errors while importing an app, ``-q``/``-Q``, and ``--json`` everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import Client, JobState, Tasks, ops

from helpers import run_cli as cli

ROOT = Path(__file__).resolve().parents[2]


def as_json(url: str, *args: str) -> Any:
    return json.loads(cli(url, *args, "--json").stdout)


def make_tasks(queue: str) -> Any:
    tasks = Tasks(queue=queue)

    @tasks.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    return add


def fail_jobs(client: Client, queue: str, count: int) -> list[str]:
    """Dead-letter ``count`` new jobs (claimed, then failed with no retries left)."""
    add = make_tasks(queue)
    client.enqueue_many([add.call(i) for i in range(count)])
    claimed = client.run(ops.claim(client.keys(queue), count, 10_000, "w")).jobs
    client.run(
        ops.fail(
            client.keys(queue),
            ops.Retention(-1, -1),
            [(j.id, j.token, b"{}", -1, ops.NOT_DEFERRED) for j in claimed],
        )
    )
    return [j.id for j in claimed]


def test_pause_refuses_a_queue_that_never_had_a_job(
    url: str, client: Client, raw: redis.Redis, queue: str
) -> None:
    typo = f"{queue}x"
    client.enqueue(make_tasks(queue), 1)
    refused = cli(url, "pause", "--queue", typo, code=1)
    assert "never had a job" in refused.stderr and "--create" in refused.stderr
    assert f"Did you mean '{queue}'" in refused.stderr
    assert list(raw.scan_iter(match=f"*{typo}*")) == [], "a refused pause writes nothing"
    assert "nothing to resume" in cli(url, "resume", "--queue", typo, code=1).stderr
    assert "never had a job" in cli(url, "limits", "--queue", typo, "--concurrency", "2", code=1).stderr
    assert list(raw.scan_iter(match=f"*{typo}*")) == []
    assert "paused" in cli(url, "pause", "--queue", queue).stdout  # a real queue needs no --create
    assert "paused" in cli(url, "pause", "--queue", typo, "--create").stdout
    assert client.settings_of(typo) == {"paused": 1}
    assert typo in client.queues(), "a queue paused on purpose is listed by conveyor info"


def test_info_shows_paused_queues_and_their_limits(url: str, client: Client, queue: str) -> None:
    client.enqueue(make_tasks(queue), 1)
    cli(url, "limits", "--queue", queue, "--concurrency", "3", "--rate", "10/2", "--priority-aging", "30")
    cli(url, "pause", "--queue", queue)
    table = cli(url, "info", "--queue", queue).stdout
    assert "paused" in table and "concurrency 3" in table and "rate 10/2s" in table and "aging 30s" in table
    [shown] = as_json(url, "info", "--queue", queue)["queues"]
    assert shown == {
        "name": queue,
        "counts": {**dict.fromkeys((s.value for s in JobState), 0), "waiting": 1},
        "paused": True,
        "limits": {"concurrency": 3, "rate": {"max": 10, "seconds": 2.0}, "priority_aging_seconds": 30.0},
    }


def test_arguments_that_are_not_json_are_said_so_or_refused(url: str, client: Client, queue: str) -> None:
    sent = cli(url, "enqueue", "add", "1", "two", "--queue", queue, "--job-id", "loose")
    assert "argument 2 ('two') is not JSON" in sent.stderr and '"two"' in sent.stderr
    assert client.get_job(queue, "loose").args == [1, "two"]
    quiet = cli(url, "enqueue", "add", "1", '"two"', "--queue", queue, "--job-id", "quoted")
    assert "not JSON" not in quiet.stderr
    strict = cli(url, "enqueue", "add", "1", "two", "--json-args", "--queue", queue, "--job-id", "no", code=2)
    assert "argument 2 ('two') is not JSON" in strict.stderr
    assert client.counts(queue)["waiting"] == 2, "the refused enqueue wrote nothing"


def test_retry_says_why_a_job_was_not_moved(url: str, client: Client, queue: str) -> None:
    failed = fail_jobs(client, queue, 2)
    client.enqueue(make_tasks(queue).with_options(job_id="still-waiting"), 1)
    result = cli(url, "retry", failed[0], "still-waiting", "ghost", "--queue", queue, code=1)
    assert "1 job(s) moved" in result.stdout
    assert f"{queue}/still-waiting: not retried, it is waiting, not failed" in result.stderr
    assert f"{queue}/ghost: no such job" in result.stderr
    assert client.get_job(queue, failed[0]).state is JobState.WAITING
    assert "1 job(s) moved" in cli(url, "retry", f"{queue}/{failed[1]}").stdout


def test_a_job_can_be_named_as_the_worker_logs_print_it(url: str, client: Client, queue: str) -> None:
    add = make_tasks(queue)
    client.enqueue(add.with_options(job_id="logged"), 1)
    client.enqueue(add.with_options(job_id="gone"), 1)
    assert as_json(url, "job", f"{queue}/logged")["id"] == "logged"
    assert "cancelled" in cli(url, "cancel", f"{queue}/logged").stdout
    assert "removed gone" in cli(url, "remove", f"{queue}/gone").stdout
    clash = cli(url, "job", f"{queue}/logged", "--queue", "elsewhere", code=2)
    assert "names queue" in clash.stderr and "elsewhere" in clash.stderr
    assert "logged" in cli(url, "job", f"{queue}/logged", "--queue", queue).stdout


def test_capital_q_names_the_queue_as_for_the_worker(url: str, client: Client, queue: str) -> None:
    other = f"{queue}-2"
    add = make_tasks(queue)
    client.enqueue_many([add.call(1), add.with_options(queue=other).call(2)])
    assert as_json(url, "jobs", "-Q", queue)["total"] == 1
    listed = as_json(url, "info", "-Q", f"{queue},{other}")["queues"]
    assert [q["name"] for q in listed] == [queue, other]
    assert [q["name"] for q in as_json(url, "info", "-q", queue, "-q", other)["queues"]] == [queue, other]


def test_every_read_command_prints_json(url: str, client: Client, queue: str) -> None:
    from conveyor.schedules import Schedule

    client.add_schedule(Schedule("tick", "add", queue=queue, every=60, args=(1,)))
    enqueued = as_json(url, "enqueue", "add", "1", "--queue", queue, "--job-id", "j")
    assert enqueued == {"id": "j", "queue": queue, "outcome": "created", "created": True}
    page = as_json(url, "jobs", "--queue", queue)
    assert page["total"] == 1 and page["jobs"][0]["id"] == "j" and page["jobs"][0]["args"] == [1]
    assert as_json(url, "job", "j", "--queue", queue)["state"] == "waiting"
    assert queue in {q["name"] for q in as_json(url, "info")["queues"]}
    assert isinstance(as_json(url, "workers")["workers"], list)
    [schedule] = as_json(url, "schedules", "--queue", queue)["schedules"]
    assert schedule["name"] == "tick" and schedule["every"] == 60 and schedule["next_run"]
    limits = as_json(url, "limits", "--queue", queue)
    assert limits == {"queue": queue, "paused": False, "limits": {}}


BROKEN_APP = """\
import json


def load_settings():
    return json.loads("{not json")


SETTINGS = load_settings()
"""


def test_an_app_that_raises_on_import_shows_only_its_own_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.cli.options import AppImportError, import_app_module

    (tmp_path / "brokenapp.py").write_text(BROKEN_APP)
    (tmp_path / "typoapp.py").write_text("def f(:\n    pass\n")
    (tmp_path / "needsdep.py").write_text("import no_such_dependency_anywhere\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppImportError) as raised:
        import_app_module("brokenapp")
    message = raised.value.message
    assert "brokenapp.py" in message and "SETTINGS = load_settings()" in message
    assert 'return json.loads("{not json")' in message and "JSONDecodeError" in message
    assert "importlib" not in message and "click" not in message and "conveyor" not in message
    assert len(message.splitlines()) < 20
    with pytest.raises(AppImportError) as raised:
        import_app_module("typoapp")
    assert "typoapp.py" in raised.value.message and "SyntaxError" in raised.value.message
    with pytest.raises(AppImportError) as raised:
        import_app_module("needsdep")
    assert "needsdep.py" in raised.value.message and "no_such_dependency_anywhere" in raised.value.message
    with pytest.raises(AppImportError, match="cannot import 'not_there_at_all'"):
        import_app_module("not_there_at_all")


def test_conveyor_worker_reports_an_app_that_raises_on_import_briefly(url: str, tmp_path: Path) -> None:
    (tmp_path / "brokenapp.py").write_text(BROKEN_APP)
    result = cli(url, "worker", "brokenapp:tasks", code=2, cwd=tmp_path)
    assert "SETTINGS = load_settings()" in result.stderr and "JSONDecodeError" in result.stderr
    assert "importlib" not in result.stderr and "click" not in result.stderr
    assert len(result.stderr.splitlines()) < 20


def test_an_id_or_queue_no_url_can_address_is_refused_without_a_traceback(
    url: str, client: Client, queue: str
) -> None:
    result = cli(url, "enqueue", "add", "1", "--queue", queue, "--job-id", "order/7", code=2)
    assert "job id 'order/7'" in result.stderr and "Traceback" not in result.stderr
    assert client.counts(queue)["waiting"] == 0 and queue not in client.queues()
    result = cli(url, "info", "-Q", "team/emails", code=2)
    assert "team/emails" in result.stderr and "Traceback" not in result.stderr
