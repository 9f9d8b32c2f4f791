"""How training and measurement jobs run the network (``runtime.precision``,
``runtime.compile``, ``runtime.channels_last``), as the one string a rule
passes to its job. Torch-free: the workflow reads it while parsing; the
passes themselves are run by ``ldsbench.diffusion.precision``."""

from __future__ import annotations

import dataclasses

PRECISIONS = ("fp32", "tf32", "bf16")
#: Options of ``NetworkPasses`` beside its precision, as they appear in its key.
PASS_OPTIONS = ("compile", "channels_last")


@dataclasses.dataclass(frozen=True)
class NetworkPasses:
    """How a job runs the network: ``precision`` (one of ``PRECISIONS``),
    compiled or not, channels-last or not.

    A rule passes it as one string, its ``key``: the precision alone when no
    option is on ("fp32"), else the precision and the options joined by "+"
    ("bf16+compile+channels_last"). A results folder that uses no option
    therefore keeps the rule parameter it had before the options existed,
    and Snakemake reruns a job only when its passes change."""

    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")

    @property
    def key(self) -> str:
        return "+".join([self.precision, *(option for option in PASS_OPTIONS if getattr(self, option))])

    @classmethod
    def from_key(cls, key: str) -> NetworkPasses:
        precision, *options = key.split("+")
        unknown = sorted(set(options) - set(PASS_OPTIONS))
        if unknown:
            raise ValueError(f"unknown network pass option {unknown[0]!r} in {key!r}; expected some of {PASS_OPTIONS}")
        return cls(precision, **{option: True for option in options})

    @classmethod
    def from_runtime(cls, runtime: dict) -> NetworkPasses:
        """The passes of a training or measurement job under config ``runtime``."""
        return cls(runtime["precision"], runtime["compile"], runtime["channels_last"])


def scoring_precision(runtime: dict) -> str:
    """The precision of the passes that take gradients for attribution
    (features, curvature data, scores): ``runtime.scoring_precision``, or
    ``runtime.precision`` when it is null. They always run eager."""
    return runtime["scoring_precision"] or runtime["precision"]


#: The default: fp32, eager, contiguous memory format.
DEFAULT_PASSES = NetworkPasses()
