"""Episodes as RL datasets: a TRL file and a verl file, both parquet and loadable with ``datasets``.

* **TRL** (``trl.parquet``): the conversational ``prompt`` column TRL's trainers read, plus ``answer`` (passed to
  reward functions as a keyword argument), ``problem_id``, ``num_messages``, ``message_accuracy``, ``domain``,
  ``stage`` and ``images``.
* **verl** (``verl.parquet``): verl's RL schema: ``data_source``, ``prompt``, ``ability``, ``reward_model``
  (``style`` and ``ground_truth``) and ``extra_info``, plus ``images``. verl's ``RLHFDataset`` reads ``prompt``
  as the chat (``raw_prompt``) and ``images`` for multimodal models; its reward manager passes ``data_source``,
  ``reward_model.ground_truth`` and ``extra_info`` to :func:`pacore_graph.training.rewards.compute_score`
  (``data_source`` is ``pacore/<domain>``; ``extra_info.index`` is the episode's index among its problem's).

A message's content is always a string in both files (Arrow needs one type a column): the text of its text parts,
joined as vLLM joins them; its non-text parts (images) go, in order, to the row's ``images`` column as URLs. TRL
puts a row's images before the text of the first user message itself; verl wants an ``<image>`` placeholder where
each image goes, so in the verl file a message with images ends with one ``<image>`` per image (after its text,
as P(x, M) places them at inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pacore_graph.messages import non_text_parts, text_of
from pacore_graph.training.episode import Episode

__all__ = ["DATA_SOURCE_PREFIX", "VERL_IMAGE_PLACEHOLDER", "trl_row", "verl_row", "write_exports"]

DATA_SOURCE_PREFIX = "pacore"
"""verl's ``data_source`` of an episode is ``pacore/<domain>``: what routes it to :func:`compute_score`."""


#: verl's placeholder for an image in a message's text (``RLHFDataset`` swaps each for the next ``images`` entry).
VERL_IMAGE_PLACEHOLDER = "<image>"


def _flat(prompt: Sequence[dict[str, Any]], placeholder: str = "") -> tuple[list[dict[str, str]], list[str]]:
    messages: list[dict[str, str]] = []
    images: list[str] = []
    for message in prompt:
        content = message.get("content")
        urls = []
        for part in non_text_parts(content):
            url = part.get("image_url", {}).get("url") if isinstance(part, dict) else None
            if isinstance(url, str):
                urls.append(url)
        messages.append({"role": str(message["role"]), "content": text_of(content) + placeholder * len(urls)})
        images += urls
    return messages, images


def trl_row(episode: Episode) -> dict[str, Any]:
    """The episode as one row of the TRL file."""
    prompt, images = _flat(episode.prompt)
    return {
        "prompt": prompt,
        "answer": episode.answer,
        "problem_id": episode.problem_id,
        "num_messages": episode.num_messages,
        "message_accuracy": episode.message_accuracy,
        "domain": episode.domain,
        "stage": episode.stage,
        "images": images,
    }


def verl_row(episode: Episode) -> dict[str, Any]:
    """The episode as one row of the verl file (verl's RL dataset schema)."""
    prompt, images = _flat(episode.prompt, VERL_IMAGE_PLACEHOLDER)
    return {
        "data_source": f"{DATA_SOURCE_PREFIX}/{episode.domain}",
        "prompt": prompt,
        "ability": episode.domain,
        "reward_model": {"style": "rule", "ground_truth": episode.answer},
        "extra_info": {
            "problem_id": episode.problem_id,
            "index": episode.index,
            "num_messages": episode.num_messages,
            "message_accuracy": episode.message_accuracy,
            "stage": episode.stage,
        },
        "images": images,
    }


def write_exports(episodes: Sequence[Episode], out: Path) -> dict[str, Path]:
    """Write ``trl.parquet`` and ``verl.parquet`` under ``out``; returns their paths by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    paths = {"trl": out / "trl.parquet", "verl": out / "verl.parquet"}
    for name, row in (("trl", trl_row), ("verl", verl_row)):
        table = pa.Table.from_pylist([row(e) for e in episodes])
        tmp = paths[name].with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(paths[name])  # a killed build never leaves a half-written file under the final name
    return paths
