"""The verl PPO config shipped with the package: the paper's hyperparameters over verl's ``ppo_trainer``.

``verl_ppo.yaml`` (beside this module) is a Hydra config that extends verl's defaults (``pkg://verl.trainer.config``)
with PaCoRe's settings (§2.2: PPO, GAE λ = γ = 1, 16 problems × 64 responses, 131,072-token sequences,
temperature and top-p 1.0, actor lr 2e-6, critic lr 5e-6, 250 stage-1 iterations) and routes rewards to
:func:`pacore_graph.training.rewards.compute_score`. Pass :func:`config_dir` as ``--config-path`` and
``verl_ppo`` as ``--config-name`` to ``python -m verl.trainer.main_ppo`` (README, "Training a synthesizer").
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_NAME", "config_dir", "config_path"]

#: The ``--config-name`` of the shipped config.
CONFIG_NAME = "verl_ppo"


def config_dir() -> Path:
    """The folder holding ``verl_ppo.yaml`` (verl's ``--config-path``)."""
    return Path(__file__).resolve().parent


def config_path() -> Path:
    """The shipped config file itself."""
    return config_dir() / f"{CONFIG_NAME}.yaml"
