"""The model a service runs: checked, loaded and warmed up before the server listens.

Everything that can refuse a model directory (missing, truncated, corrupt, no tokenizer, a tokenizer of
another model, an unknown prompt template in radreport.json) runs here, before uvicorn starts, so
`python -m serve` fails with one line and exit status 2 instead of a traceback from inside the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from radreport.errors import InputError
from radreport.generation import Generated, generate, params_from_config, params_from_model
from radreport.modeling import (
    ModelMeta,
    check_model_dir,
    load_model,
    load_tokenizer,
    read_meta,
    resolve_device,
    resolve_dtype,
)
from serve.config import ServeConfig

log = logging.getLogger("serve")
WARMUP_FINDINGS = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."


@dataclass
class ServedModel:
    model: object
    tokenizer: object
    meta: ModelMeta
    name: str
    """What answers report as `model`: the directory's name (or the hub id)."""

    def generate(self, findings: list[str], params, backgrounds: list[str]) -> list[Generated]:
        return generate(self.model, self.tokenizer, self.meta, findings, params, backgrounds)

    def default_params(self, **overrides):
        return params_from_model(self.model, **overrides)


def check_defaults_within_limits(model_dir: str, config: ServeConfig) -> None:
    """The model's decoding defaults (its generation_config.json) within this server's limits, checked before the
    weights load: else every request that leaves a value to the model would get a 422."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return  # transformers' defaults for T5 are within any limits check() allows
    from transformers import GenerationConfig

    defaults = params_from_config(GenerationConfig.from_pretrained(model_dir))
    for key, limit in config.limits().items():
        if getattr(defaults, key) > limit:
            raise InputError(
                f"{path}: {key} {getattr(defaults, key)} is over this server's limit of {limit}; raise the limit "
                "in the serve config or lower the model's default"
            )


def load_served_model(model_dir: str, config: ServeConfig) -> ServedModel:
    """Check, load and (config.warmup) warm up; InputError names what is wrong with the directory."""
    check_model_dir(model_dir)
    check_defaults_within_limits(model_dir, config)
    meta = read_meta(model_dir)
    tokenizer = load_tokenizer(model_dir)
    device = resolve_device(config.device)
    model = load_model(model_dir, resolve_dtype(config.dtype, device), device)
    name = Path(model_dir).name if Path(model_dir).is_dir() else model_dir
    served = ServedModel(model, tokenizer, meta, name)
    if config.warmup:
        served.generate([WARMUP_FINDINGS], served.default_params(), [""])
    log.info("loaded: model=%s device=%s dtype=%s", name, device, next(model.parameters()).dtype)
    return served
