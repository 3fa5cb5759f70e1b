"""The fp16 overflow guard for T5: stop at the first inf/NaN activation instead of training on it.

T5's feed-forward output (`wo`) exceeds the fp16 range on real data. transformers keeps `wo` in fp32
for that reason, but DeepSpeed's fp16 engine casts every weight, so nothing protects it. With the
guard on, every `wo` output is checked each forward; the first non-finite one stops the run naming
the layer. A run that finishes under the guard has produced no inf/NaN activation in those layers.
"""

from __future__ import annotations

import torch


class ActivationOverflow(RuntimeError):
    pass


def install_overflow_guard(model: torch.nn.Module) -> int:
    """Hook every module named `*.wo`; returns how many were hooked."""
    hooked = 0
    for name, module in model.named_modules():
        if name.endswith(".wo"):
            module.register_forward_hook(_make_hook(name))
            hooked += 1
    if not hooked:
        raise ValueError("fp16_overflow_guard: the model has no `wo` feed-forward layers to watch (not a T5?)")
    return hooked


def _make_hook(name: str):
    def hook(module, inputs, output):
        if not torch.isfinite(output).all():
            raise ActivationOverflow(
                f"non-finite activation in {name} (dtype {output.dtype}): fp16 overflow; "
                "use fp32 or bf16 for this model"
            )

    return hook
