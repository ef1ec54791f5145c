"""Each rule's settings flags, made from the validated config through ``plmexit.settings``.

Invariant: a rule's command takes its config settings only from here (``params: embed=plan.flags.embed``,
``shell: "plmexit embed ... {params.embed}"``), so a setting's flag and its check are written once, in
``plmexit.settings``; building them runs every settings check, so a bad config stops the DAG before any job.
Flags that depend on the task (type, metric, variant crop, storage dtype) stay with the plan.
"""

from __future__ import annotations

from plmexit.errors import ConfigError, PlmexitError
from plmexit.settings import (
    ArchiveSettings,
    CostSettings,
    EmbedSettings,
    ExitSettings,
    LensExitSettings,
    LensSettings,
    PrepareSettings,
    ProbeGrid,
    SelectSettings,
    TimingSettings,
    ZeroShotSettings,
)


class RuleFlags:
    """The settings flags of every rule that takes config settings, each a shell-quoted string."""

    def __init__(self, config: dict):
        try:
            embed = EmbedSettings.from_config(config)
            select = SelectSettings.from_config(config)
            exit_ = ExitSettings.from_config(config)
            self.prepare = PrepareSettings.from_config(config).flags()
            self.cost = CostSettings.from_config(config).flags()
            self.probe = ProbeGrid.from_config(config).flags()
            self.lens = LensSettings.from_config(config).flags()
            self.zero_shot = ZeroShotSettings.from_config(config).flags()
            self.lens_exit = LensExitSettings.from_config(config).flags()
            self.exit_timing = TimingSettings.from_config(config).flags()
            self.archive = ArchiveSettings.from_config(config).flags()
        except (PlmexitError, ValueError) as exc:
            raise ConfigError(f"config: {exc}") from None
        self.embed = embed.flags()
        self.select = select.flags()
        self.summarize = select.flags(only=("bootstrap", "seed"))
        self.exit = exit_.flags()
        self.summarize_exit = exit_.flags(only=("epsilon",))
