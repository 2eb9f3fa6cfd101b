"""Each setting modelled once: one settings model (YAML names as aliases), graph specs on top of it, and one
override path that the command line, the proxy's ``pacore`` options and Python all take."""

import asyncio
import json

import openai
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pacore_graph import ConfigError, PaCoReConfig, SamplingParams, VLLMClient
from pacore_graph.cli.main import app
from pacore_graph.graphs import GraphSpec, load_graph, load_spec, parse_spec
from pacore_graph.overrides import OVERRIDE_TARGETS, Overrides, override_field
from pacore_graph.prompts import REFERENCE_TEMPLATE
from pacore_graph.server import PaCoReOptions, PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply

TEMPLATE = "Q: {{ original_prompt }}\n{% for r in ref_responses %}- {{ r }}\n{% endfor %}"


def script(request):
    return FakeReply(content=f"<think>scratch {request.index}</think>Conclusion {request.index}")


# -- one model, two spellings --------------------------------------------------------------------------------------


def test_the_yaml_names_and_the_python_names_give_the_same_config():
    yaml_names = PaCoReConfig.model_validate(
        {
            "schedule": [3, 2],
            "sampling": {"temperature": 0.9, "max_tokens": 500},
            "round_sampling": {2: {"max_tokens": 300}},
            "synthesis_sampling": {"temperature": 0.2},
            "answer": {"boxed": False},
            "prompt": {"template": TEMPLATE},
        }
    )
    python_names = PaCoReConfig(
        schedule=[3, 2],
        params=SamplingParams(temperature=0.9, max_tokens=500),
        round_params={2: SamplingParams(max_tokens=300)},
        synthesis_params=SamplingParams(temperature=0.2),
        extraction={"boxed": False},
        template=TEMPLATE,
    )
    assert yaml_names == python_names
    # The layers: unset fields of a per-round section come from the base, in Python as in YAML.
    assert python_names.params_for_round(2) == SamplingParams(temperature=0.9, max_tokens=300)
    assert python_names.final_params == SamplingParams(temperature=0.2, max_tokens=500)
    assert python_names.template == TEMPLATE and python_names.extraction.boxed is False
    assert PaCoReConfig().template == REFERENCE_TEMPLATE
    assert PaCoReConfig(template=REFERENCE_TEMPLATE).prompt.template == "official"
    assert PaCoReConfig(template="official").template == REFERENCE_TEMPLATE
    # Dumps use the YAML names, and load back to the same config.
    dumped = python_names.model_dump(mode="json")
    assert {"sampling", "round_sampling", "synthesis_sampling", "answer", "prompt"} <= set(dumped)
    assert "template" not in dumped and "params" not in dumped
    assert PaCoReConfig.model_validate(dumped) == python_names


def test_both_spellings_at_once_and_the_rules_are_refused_in_python_too():
    with pytest.raises(ValidationError, match="sampling: is also given as params"):
        PaCoReConfig(params={}, sampling={})
    with pytest.raises(
        ValidationError, match=r"round_sampling: round\(s\) \[3\] are not parallel rounds of schedule '4'"
    ):
        PaCoReConfig(schedule=[4], round_params={3: {}})
    with pytest.raises(ValidationError, match=r"prompt\.template\n.*the template never uses ref_responses"):
        PaCoReConfig(template="no references")


def test_a_graph_spec_is_identity_on_top_of_the_settings():
    spec = load_spec("pacore-high")
    assert isinstance(spec, PaCoReConfig)
    assert set(GraphSpec.model_fields) - set(PaCoReConfig.model_fields) == {"name", "description", "type"}
    config = spec.to_config()
    assert type(config) is PaCoReConfig
    assert config == PaCoReConfig.model_validate(spec.model_dump(exclude={"name", "description", "type"}))
    assert list(spec.model_dump())[:4] == ["name", "description", "type", "schedule"]


def test_every_option_sets_a_settings_field_and_the_proxy_takes_the_same_options():
    assert set(Overrides.model_fields) == set(OVERRIDE_TARGETS)
    for option in OVERRIDE_TARGETS:
        assert override_field(option) is not None
    assert issubclass(PaCoReOptions, Overrides) and set(PaCoReOptions.model_fields) == set(Overrides.model_fields)


# -- one override path ---------------------------------------------------------------------------------------------

OPTIONS = {"schedule": "3", "temperature": 0.3, "max_tokens": 77, "seed": 5, "truncated": "keep"}
FLAGS = ["-s", "3", "--temperature", "0.3", "--max-tokens", "77", "--seed", "5", "--truncated", "keep"]


def sampled(bodies):
    return [(b["temperature"], b.get("max_tokens"), b.get("seed")) for b in bodies]


async def python_and_proxy(python: GraphSpec) -> tuple[list, list]:
    """The sampling the server sees from the graph run in Python, then from the proxy given OPTIONS."""
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url) as client:
            await load_graph(python, client).ainvoke({"problem": "What is 17 * 23?"})
            from_python = sampled(r.body for r in server.requests)
            server.requests.clear()
            async with PaCoReProxy(client, ProxySettings(port=0)) as proxy:
                api = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
                await api.chat.completions.create(
                    model="pacore-low",
                    messages=[{"role": "user", "content": "What is 17 * 23?"}],
                    extra_body={"pacore": OPTIONS},
                )
                await api.close()
            from_proxy = sampled(r.body for r in server.requests)
    return from_python, from_proxy


def test_an_override_from_the_cli_the_proxy_and_python_gives_the_same_config():
    spec = load_spec("pacore-low")
    python = spec.with_overrides(OPTIONS)
    assert python == spec.with_overrides(**OPTIONS) == spec.with_overrides(Overrides(**OPTIONS))
    assert python.compaction.truncated == "keep" and list(python.schedule.rounds) == [3]
    from_python, from_proxy = asyncio.run(python_and_proxy(python))
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(app, ["run", "What is 17 * 23?", *FLAGS, "--base-url", server.base_url, "-q"])
        from_cli = sampled(r.body for r in server.requests)
    assert result.exit_code == 0, result.output
    assert from_python == [(0.3, 77, 5), (0.3, 77, 6), (0.3, 77, 7), (0.3, 77, 8)]
    assert from_proxy == from_python
    assert from_cli == from_python


BAD = [
    ({"top_p": 0}, ["--top-p", "0"], "invalid option top_p=0.0: Input should be greater than 0"),
    (
        {"straggler_grace": 1},
        ["--straggler-grace", "1"],
        "invalid option straggler_grace=1.0: straggler_grace closes a round once its quorum is back, so it needs a "
        "quorum: set min_trajectories or min_fraction too",
    ),
    (
        {"n_batch": 2, "min_trajectories": 1, "straggler_grace": 0.5},
        ["--n-batch", "2", "--min-trajectories", "1", "--straggler-grace", "0.5"],
        "invalid option n_batch=2: n_batch and failure.straggler_grace do not combine",
    ),
    ({"truncated": "maybe"}, ["--truncated", "maybe"], "invalid option truncated='maybe': use 'drop' or 'keep'"),
]


@pytest.mark.parametrize(("options", "flags", "message"), BAD, ids=["range", "quorum", "n-batch", "choice"])
async def test_a_bad_value_gives_the_same_config_error_from_each(options, flags, message):
    with pytest.raises(ConfigError) as python:
        load_spec("pacore-low").with_overrides(options)
    text = str(python.value)
    assert text.startswith(message)
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url) as client, PaCoReProxy(client, ProxySettings(port=0)) as proxy:
            api = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
            with pytest.raises(openai.BadRequestError) as proxied:
                await api.chat.completions.create(
                    model="pacore-low", messages=[{"role": "user", "content": "Q"}], extra_body={"pacore": options}
                )
            await api.close()
        assert server.requests == []
    assert proxied.value.body["message"] == text
    cli = CliRunner().invoke(app, ["run", "Q", *flags, "--base-url", "http://127.0.0.1:9/v1"])
    assert cli.exit_code == 2
    assert cli.stderr.strip() == f"error: {text}"
    # A plain PaCoReConfig takes the same path, with the same message.
    with pytest.raises(ConfigError) as plain:
        PaCoReConfig().with_overrides(options)
    assert str(plain.value) == text


def test_unknown_options_and_types_are_config_errors():
    with pytest.raises(ConfigError, match="unknown option 'tmperature'; allowed: schedule, temperature"):
        PaCoReConfig().with_overrides(tmperature=1)
    with pytest.raises(ConfigError, match="invalid option temperature='hot': Input should be a valid number"):
        PaCoReConfig().with_overrides(temperature="hot")
    assert PaCoReConfig().with_overrides(temperature=None) == PaCoReConfig()  # None leaves a setting as it is


def test_a_rule_an_override_breaks_names_the_options():
    spec = parse_spec(
        {"name": "x", "type": "pacore", "schedule": [2, 2], "round_sampling": {2: {"temperature": 0.5}}}, source="t"
    )
    with pytest.raises(ConfigError, match=r"^invalid option schedule=\[3\]: round_sampling: round\(s\) \[2\]"):
        spec.with_overrides(schedule=[3])
    # Sampling options reach the per-round sections too.
    assert spec.with_overrides(temperature=0.1).params_for_round(2).temperature == 0.1


# -- run and eval take the same graph options ----------------------------------------------------------------------


def graph_options(command: str) -> set[str]:
    import typer.main

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts}


def test_run_and_eval_accept_the_same_graph_options():
    shared = {
        "--schedule", "--temperature", "--top-p", "--max-tokens", "--seed", "--truncated", "--max-model-len",
        "--min-trajectories", "--min-fraction", "--straggler-grace", "--n-batch", "--max-k", "--max-rounds",
    }  # fmt: skip
    assert shared <= graph_options("run")
    assert shared <= graph_options("eval")


def eval_with(tmp_path, server, *args):
    out = str(tmp_path / "out")
    common = ["--graph", "pacore-low:2", "--runs", "1", "--no-pool", "--base-url", server.base_url]
    command = ["eval", "--dataset", "builtin:arith?n=2", "--out", out, *common, *args]
    return CliRunner().invoke(app, command, catch_exceptions=False)


def test_eval_max_model_len_fits_every_prompt_to_the_context(tmp_path):
    pytest.importorskip("math_verify")
    with FakeOpenAIServer(script).in_thread() as server:
        result = eval_with(tmp_path, server, "--max-model-len", "8", "--max-tokens", "4")
        assert result.exit_code == 0, result.output
        assert server.requests == []  # no prompt fits 8 - 4 tokens: each run fails before anything is sent
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all("ContextBudgetError" in r["error"] and "(max_model_len 8 - max_tokens 4)" in r["error"] for r in records)


def test_eval_refuses_a_bad_graph_option_as_run_does(tmp_path):
    with FakeOpenAIServer(script).in_thread() as server:
        result = eval_with(tmp_path, server, "--straggler-grace", "1")
        assert server.requests == []
    assert result.exit_code == 2
    assert "invalid option straggler_grace=1.0: straggler_grace closes a round once its quorum is back" in result.stderr
