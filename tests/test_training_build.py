"""`pacore train build` end to end: the real CLI, real HTTP to the fake server scripted so each problem's pool holds a
known number of right messages, and the exported parquet files read back with `datasets`."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.eval.pool import PoolEntry
from pacore_graph.prompts import REFERENCE_TEMPLATE, build_prompt, render_references
from pacore_graph.testing import FakeOpenAIServer, FakeReply
from pacore_graph.training.pool import message_of

#: Right messages out of 24, per problem; stage 1 (math) keeps 0 < right < 9.
RIGHT = {"p0": 0, "p1": 1, "p2": 5, "p3": 8, "p4": 9, "p5": 12, "p6": 24, "p7": 3}
STAGE1 = {"p1", "p2", "p3", "p7"}
ANSWER = {pid: str(40 + i) for i, pid in enumerate(RIGHT)}


def question(pid: str) -> str:
    return f"Problem {pid}: what is the number? Put it in \\boxed{{}}."


QUESTIONS = {question(pid): pid for pid in RIGHT}


def write_dataset(path, pids=tuple(RIGHT)):
    path.write_text("".join(json.dumps({"id": p, "problem": question(p), "answer": ANSWER[p]}) + "\n" for p in pids))
    return path


def is_synthesis(request) -> bool:
    return "Reference Responses:" in (request.last_user_content or "")


def pid_of(request) -> str:
    text = request.last_user_content
    if is_synthesis(request):
        text = text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:", 1)[0]
    return QUESTIONS[text]


def round1_reply(pid: str, slot: int, delay: float = 0.0) -> FakeReply:
    """Slot ``slot`` (the request's seed: slot i is sampled with seed 0 + i) is right when ``slot < RIGHT[pid]``.

    Every message names its slot, so the references in a prompt show which slots they came from. A wrong message
    thinks the right answer before its last ``</think>``: only the conclusion is graded.
    """
    if slot < RIGHT[pid]:
        content = f"<think>slot {slot} works it out</think>Slot {slot} of {pid} concludes \\boxed{{{ANSWER[pid]}}}"
    else:
        content = f"<think>maybe \\boxed{{{ANSWER[pid]}}}</think>Slot {slot} of {pid} concludes \\boxed{{999}}"
    return FakeReply(content=content, completion_tokens=5, delay=delay)


def scripted(synthesis_right=None, delay: float = 0.0):
    """Round 1 as above; a synthesis of episode i of problem p is right when ``synthesis_right(p, i)``."""
    counts: Counter = Counter()
    lock = threading.Lock()

    def script(request):
        pid = pid_of(request)
        seed = int(request.body.get("seed", 0))
        with lock:
            counts["synthesis" if is_synthesis(request) else "round1"] += 1
        if is_synthesis(request):
            right = synthesis_right is not None and synthesis_right(pid, seed)
            return FakeReply(content=f"<think>...</think>\\boxed{{{ANSWER[pid] if right else '0'}}}")
        return round1_reply(pid, seed, delay)

    script.counts = counts  # type: ignore[attr-defined]
    return script


def build(*args: str):
    return CliRunner().invoke(app, ["train", "build", *args], catch_exceptions=False)


def load_parquet(path):
    import datasets

    return datasets.Dataset.from_parquet(str(path))


def pool_messages(out) -> dict[str, str]:
    """Every message stored in OUT/pool.jsonl, by its text (each names its slot and problem: texts are distinct)."""
    entries = [PoolEntry.model_validate_json(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    messages = {}
    for entry in entries:
        text = message_of(entry, CompactionPolicy())
        assert text is not None
        messages[text] = entry.key
    return messages


def references_in(prompt_text: str) -> tuple[str, list[str]]:
    """Split a rendered template back into (original problem, references)."""
    head, body = prompt_text.split("\n\nReference Responses:\n", 1)
    original = head.split("Original Problem:\n", 1)[1]
    body = body.rsplit("\n\nNow, based on the original problem", 1)[0]
    parts = re.split(r"\nReference \d+:\n", body)
    return original, [p.rstrip("\n") for p in parts if p.strip()]


# --- stage 1 ------------------------------------------------------------------------------------------------------


def test_stage1_accuracy_is_exact_and_keeps_exactly_the_hard_problems(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url,
                       "--episodes-per-problem", "3")  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    assert len(requests) == 24 * len(RIGHT)  # the pool, and nothing else
    assert all(r.last_user_content == question(pid_of(r)) and r.messages == [r.messages[-1]] for r in requests)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["message_accuracy"] == {pid: right / 24 for pid, right in RIGHT.items()}
    by_id = {p["id"]: p for p in manifest["problems"]}
    assert {pid: (p["right"], p["slots"]) for pid, p in by_id.items()} == {pid: (r, 24) for pid, r in RIGHT.items()}
    assert {pid for pid, p in by_id.items() if p["kept"]} == STAGE1
    assert manifest["counts"] == {"problems": 8, "enough_messages": 8, "stage1": 4, "kept": 4, "episodes": 12}
    assert manifest["seed"] == 0 and manifest["settings"]["messages"] == "16-24"
    assert manifest["pool"]["generated"] == 192 and manifest["pool"]["reused"] == 0
    png = (out / "message_accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "4 episodes" not in result.stdout and "12 episodes" in result.stdout

    trl = load_parquet(out / "trl.parquet")
    verl = load_parquet(out / "verl.parquet")
    assert len(trl) == len(verl) == 12
    pool = pool_messages(out)
    sizes = set()
    for row, verl_row in zip(trl, verl, strict=True):
        pid = row["problem_id"]
        assert pid in STAGE1
        assert row["answer"] == ANSWER[pid] and verl_row["reward_model"]["ground_truth"] == ANSWER[pid]
        assert row["message_accuracy"] == RIGHT[pid] / 24
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
        text = row["prompt"][0]["content"]
        assert verl_row["prompt"] == row["prompt"]
        original, refs = references_in(text)
        assert original == question(pid)
        assert 16 <= len(refs) <= 24 and len(refs) == row["num_messages"] == len(set(refs))
        # The official template, byte for byte, over references that are all this problem's pool messages.
        assert text == render_references(question(pid), refs, REFERENCE_TEMPLATE)
        assert build_prompt([{"role": "user", "content": question(pid)}], refs) == row["prompt"]
        assert all(ref in pool and f" of {pid} " in ref for ref in refs)
        assert len({pool[ref] for ref in refs}) == 1  # one pool key: this problem's
        sizes.add(len(refs))
        assert verl_row["data_source"] == "pacore/math" and verl_row["ability"] == "math"
    assert len(sizes) > 1  # |M| varies over U(16, 24)


def test_rerun_reuses_the_pool_and_is_reproducible(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out, other = tmp_path / "out", tmp_path / "other"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        first = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url)
        sent = len(server.requests)
        again = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url)
        assert len(server.requests) == sent  # every message comes from the pool file
        shared = build("--dataset", str(dataset), "--out", str(other), "--base-url", server.base_url,
                       "--pool-file", str(out / "pool.jsonl"), "--seed", "0")  # fmt: skip
        reseeded = build("--dataset", str(dataset), "--out", str(tmp_path / "s1"), "--base-url", server.base_url,
                         "--pool-file", str(out / "pool.jsonl"), "--seed", "1")  # fmt: skip
        assert len(server.requests) == sent  # the seed orders episodes; it is not part of the pool's key
    for result in (first, again, shared, reseeded):
        assert result.exit_code == 0, result.output
    assert "0 generated and 192 reused" in again.stdout
    rows = [load_parquet(d / "trl.parquet").to_list() for d in (out, other, tmp_path / "s1")]
    assert rows[0] == rows[1]
    assert rows[0] != rows[2]


def test_kill_9_during_pool_building_then_rerun_generates_only_the_missing_messages(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    total = 24 * len(RIGHT)
    with FakeOpenAIServer(scripted(delay=0.02)).in_thread() as server:
        command = [
            sys.executable, "-m", "pacore_graph.cli", "train", "build", "--dataset", str(dataset),
            "--out", str(out), "--base-url", server.base_url, "--parallel", "1", "--concurrency", "4",
        ]  # fmt: skip
        env = {**os.environ, "PACORE_BASE_URL": ""}
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        pool_file = out / "pool.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pool_file.exists() and len(pool_file.read_bytes().splitlines()) >= 30:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = len(server.requests)
        stored = len(pool_file.read_bytes().splitlines())
        assert 30 <= stored < total, "the build finished before it could be killed"
        assert not (out / "trl.parquet").exists()

        result = build(*command[5:])
        assert result.exit_code == 0, result.output
        rerun = server.requests[before:]
    assert len(rerun) == total - stored
    entries = [json.loads(line) for line in pool_file.read_text().splitlines()]
    slots = Counter((e["key"], e["slot"]) for e in entries)
    assert len(slots) == total and set(slots.values()) == {1}  # every slot once: nothing generated twice
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["message_accuracy"] == {pid: right / 24 for pid, right in RIGHT.items()}
    assert manifest["pool"]["generated"] == total - stored and manifest["pool"]["reused"] >= stored - 1


# --- stage 2 ------------------------------------------------------------------------------------------------------


def test_stage2_samples_syntheses_with_the_policy_and_keeps_the_problems_it_sometimes_solves(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl")
    out = tmp_path / "out"
    # Synthesis i (seed i) of: p1 always right, p2 right on even i, p3 never, p5 on i == 0; the rest never.
    rules = {"p1": lambda i: True, "p2": lambda i: i % 2 == 0, "p5": lambda i: i == 0}
    script = scripted(lambda pid, i: rules.get(pid, lambda _: False)(i))
    with FakeOpenAIServer(script).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url,
                       "--stage", "2", "--synthesis-samples", "4", "--episodes-per-problem", "2")  # fmt: skip
        syntheses = [r for r in server.requests if is_synthesis(r)]
        again = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url,
                      "--stage", "2", "--synthesis-samples", "4", "--episodes-per-problem", "2")  # fmt: skip
        assert len([r for r in server.requests if is_synthesis(r)]) == len(syntheses)  # stored, not sampled again
    assert result.exit_code == 0, result.output
    assert again.exit_code == 0, again.output
    assert len(syntheses) == 4 * 8
    assert {int(r.body["seed"]) for r in syntheses} == {0, 1, 2, 3}
    for request in syntheses:  # each one the official template over 16..24 of that problem's messages
        pid = pid_of(request)
        original, refs = references_in(request.last_user_content)
        assert original == question(pid) and 16 <= len(refs) <= 24 and all(f" of {pid} " in r for r in refs)
    manifest = json.loads((out / "manifest.json").read_text())
    by_id = {p["id"]: p for p in manifest["problems"]}
    assert {pid: p["synthesis_right"] for pid, p in by_id.items()} == {
        "p0": 0, "p1": 4, "p2": 2, "p3": 0, "p4": 0, "p5": 1, "p6": 0, "p7": 0,
    }  # fmt: skip
    assert {pid for pid, p in by_id.items() if p["kept"]} == {"p2", "p5"}
    assert manifest["counts"]["stage2"] == 2 and manifest["counts"]["stage1"] == 4
    rows = load_parquet(out / "trl.parquet")
    assert sorted(rows["problem_id"]) == ["p2", "p2", "p5", "p5"]
    assert set(rows["stage"]) == {2}


# --- images -------------------------------------------------------------------------------------------------------


def test_a_multimodal_problem_keeps_its_image_after_the_template_text(tmp_path):
    import shutil

    shutil.copy("tests/fixtures/small.png", tmp_path / "small.png")
    line = {"id": "p3", "problem": question("p3"), "answer": ANSWER["p3"], "images": ["small.png"]}
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(json.dumps(line) + "\n")
    out = tmp_path / "out"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url)
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    image = requests[0].messages[-1]["content"][1]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    row = load_parquet(out / "trl.parquet")[0]
    original, refs = references_in(row["prompt"][0]["content"])
    assert original == question("p3") and 16 <= len(refs) <= 24
    assert row["images"] == [image["image_url"]["url"]]


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--messages", "25-30"], "a pool of 24 messages cannot give 30 distinct references"),
        (["--messages", "24-16"], "the low end is above the high end"),
        (["--messages", "many"], "give LO-HI"),
        (["--pool-size", "8"], "a pool of 8 messages cannot give 24"),
        (["--domain", "physics"], "--domain 'physics' is not known"),
        (["--domain", "code"], "is a math problem"),
        (["--stage", "3"], "--stage 3 does not exist"),
    ],
)
def test_bad_options_fail_with_one_line_and_send_nothing(tmp_path, args, message):
    dataset = write_dataset(tmp_path / "train.jsonl")
    with FakeOpenAIServer(scripted()).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(tmp_path / "out"), "--base-url", server.base_url, *args)
        assert server.requests == []
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "trl.parquet").exists()


def test_bad_datasets_and_out_folders_fail_with_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"id": "q", "problem": "What?"}) + "\n")
    dataset = write_dataset(tmp_path / "train.jsonl")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["--dataset", str(empty), "--out", str(tmp_path / "o1")], "no problems"),
        (["--dataset", str(no_answer), "--out", str(tmp_path / "o2")], "'answer'"),
        (["--dataset", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o3")], "no such file"),
        (["--dataset", str(dataset), "--out", str(a_file)], "is a file"),
    ]
    with FakeOpenAIServer(scripted()).in_thread() as server:
        for args, message in cases:
            result = build(*args, "--base-url", server.base_url)
            assert result.exit_code == 2, result.output
            assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert server.requests == []


def test_a_filter_that_keeps_nothing_says_so_with_the_histogram_and_writes_nothing(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl", ("p0", "p5", "p6"))
    out = tmp_path / "out"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0])
    line = errors[0]
    assert "pool: 72/72 messages (0 reused, 72 generated" in result.stderr  # progress, as plain lines off a terminal
    assert "stage 1 kept none of the 3 problems (0 < message accuracy < 9/24 (math))" in line
    assert "0/24: 1, 12/24: 1, 24/24: 1" in line
    assert sorted(p.name for p in out.iterdir()) == ["pool.jsonl"]  # the pool is kept for the next try


# --- code, and the eval's pool ------------------------------------------------------------------------------------

SUM_RIGHT = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_WRONG = "a, b = map(int, input().split())\nprint(a - b)\n"


def test_code_problems_are_graded_by_their_tests_and_stage1_uses_15_of_24(tmp_path):
    tests = [{"input": "1 2\n", "output": "3\n"}, {"input": "4 4\n", "output": "8\n"}]
    rows = [
        {"id": f"c{right}", "category": "code", "problem": f"Sum two integers (variant {right}).", "tests": tests}
        for right in (4, 5)
    ]  # of 8 slots: 4/8 < 15/24 is kept, 5/8 = 15/24 is not
    dataset = tmp_path / "code.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"

    def script(request):
        right, slot = int(request.last_user_content.split("variant ")[1][0]), int(request.body["seed"])
        program = SUM_RIGHT if slot < right else SUM_WRONG if slot == right else None
        return FakeReply(content=f"```python\n{program}```" if program else "I cannot write it.")

    with FakeOpenAIServer(script).in_thread() as server:
        result = build("--dataset", str(dataset), "--out", str(out), "--base-url", server.base_url,
                       "--pool-size", "8", "--messages", "4-8", "--domain", "code")  # fmt: skip
        refused = build("--dataset", str(dataset), "--out", str(tmp_path / "o2"), "--base-url", server.base_url,
                        "--pool-size", "8", "--messages", "4-8", "--domain", "math")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["message_accuracy"] == {"c4": 0.5, "c5": 0.625}
    assert [p["id"] for p in manifest["problems"] if p["kept"]] == ["c4"]
    row = load_parquet(out / "verl.parquet")[0]
    assert row["data_source"] == "pacore/code" and json.loads(row["reward_model"]["ground_truth"]) == tests
    assert refused.exit_code == 2 and "is a code problem" in refused.stderr


def test_the_pool_of_pacore_eval_is_reused_as_is(tmp_path):
    dataset = write_dataset(tmp_path / "train.jsonl", ("p2", "p3"))
    evaluated = tmp_path / "eval"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        done = CliRunner().invoke(app, [
            "eval", "--dataset", str(dataset), "--graph", "self-consistency:24", "--runs", "1",
            "--out", str(evaluated), "--base-url", server.base_url, "--seed", "0",
        ], catch_exceptions=False)  # fmt: skip
        assert done.exit_code == 0, done.output
        sent = len(server.requests)
        result = build("--dataset", str(dataset), "--out", str(tmp_path / "out"), "--base-url", server.base_url,
                       "--pool-file", str(evaluated / "pool.jsonl"))  # fmt: skip
        assert len(server.requests) == sent == 48  # the eval's 48 round-1 trajectories, no new request
    assert result.exit_code == 0, result.output
    assert "0 generated and 48 reused" in result.stdout
