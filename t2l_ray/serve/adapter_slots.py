"""Adapters from the store on one shared base model, for the chat replicas (`chat_model.ChatModel`).

`read_adapter` reads an adapter folder into plain tensors: that is what Serve's multiplexing caches (K per
replica), so evicting one is dropping a dict, never a change to a model another request may be using.
`AdapterSlots` wraps the base with PEFT once per LoRA signature (rank, alpha, rsLoRA, target modules), a
"slot", and before each generation copies the requested adapter's tensors into its slot (`activate`). That
copy is checked against the live model, key by key and shape by shape: an adapter made for another base is
refused with a message (vLLM would load it silently into the wrong places). The base alone runs with PEFT's
`disable_adapter()`. Callers serialise `activate` and the generation that follows (one at a time per replica).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors

from t2l_ray import adapters, storage

_LORA_KEY = re.compile(r"\.lora_([AB])\.weight$")


class AdapterMismatch(ValueError):
    """An adapter that cannot be applied to the served base (another base's shapes, DoRA, extra modules)."""


@dataclass(frozen=True)
class Signature:
    """What a PEFT LoRA slot is built from; adapters with the same signature share one slot."""

    rank: int
    alpha: float
    rslora: bool
    targets: tuple[str, ...]

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, use_rslora=self.rslora,
                          target_modules=list(self.targets), lora_dropout=0.0, bias="none")


@dataclass
class LoadedAdapter:
    adapter_id: str
    signature: Signature
    tensors: dict[str, torch.Tensor]  # the file's keys (no adapter name inside) -> weights on the replica's device
    fits: bool = False  # checked against its slot once


def read_adapter(adapter_id: str, folder: str, device: str) -> LoadedAdapter:
    """An adapter folder as tensors on `device`; FileNotFoundError when it is not (completely) there."""
    try:
        config = json.loads(storage.read_bytes(storage.join(folder, adapters.CONFIG_FILE)))
        weights = storage.read_bytes(storage.join(folder, adapters.WEIGHTS_FILE))
    except json.JSONDecodeError as error:
        raise AdapterMismatch(f"adapter {adapter_id!r}: {adapters.CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterMismatch(f"adapter {adapter_id!r} is not a PEFT LoRA adapter")
    if config.get("use_dora") or config.get("modules_to_save"):
        raise AdapterMismatch(f"adapter {adapter_id!r} uses DoRA or modules_to_save, which chat serving does not apply")
    rank, targets = config.get("r"), config.get("target_modules")
    if not isinstance(rank, int) or rank < 1 or not isinstance(targets, list) or not targets:
        raise AdapterMismatch(f"adapter {adapter_id!r}: {adapters.CONFIG_FILE} needs a positive r and target_modules")
    signature = Signature(rank, float(config.get("lora_alpha", rank)), bool(config.get("use_rslora")),
                          tuple(sorted(targets)))
    tensors = {key: value.to(device) for key, value in load_safetensors(weights).items()}
    return LoadedAdapter(adapter_id, signature, tensors)


class AdapterSlots:
    """One base model and its PEFT LoRA slots; `activate` picks what the next generation runs with."""

    def __init__(self, base: torch.nn.Module):
        self.base = base
        self.model = None  # the PeftModel around `base`, from the first adapter on
        self._slots: dict[Signature, tuple[str, dict[str, torch.nn.Parameter]]] = {}
        self._holds: dict[str, LoadedAdapter] = {}  # slot name -> the adapter whose tensors are in it

    def activate(self, adapter: LoadedAdapter | None):
        """(model to generate with, context to generate in): the base alone for None, else the adapter's slot."""
        if adapter is None:
            if self.model is None:
                return self.base, contextlib.nullcontext()
            return self.model, self.model.disable_adapter()
        name, params = self._slot(adapter)
        if not adapter.fits:
            self._check_fit(adapter, name, params)
            adapter.fits = True
        if self._holds.get(name) is not adapter:
            with torch.no_grad():
                for key, value in adapter.tensors.items():
                    params[_slot_key(key, name)].copy_(value)
            self._holds[name] = adapter
        self.model.set_adapter(name, inference_mode=True)
        return self.model, contextlib.nullcontext()

    def _slot(self, adapter: LoadedAdapter) -> tuple[str, dict[str, torch.nn.Parameter]]:
        signature = adapter.signature
        if signature not in self._slots:
            from peft import get_peft_model

            name = f"slot{len(self._slots)}"
            try:
                if self.model is None:
                    self.model = get_peft_model(self.base, signature.lora_config(), adapter_name=name,
                                                autocast_adapter_dtype=False)
                else:
                    self.model.add_adapter(name, signature.lora_config(), autocast_adapter_dtype=False)
            except ValueError as error:  # e.g. target modules the base does not have
                raise AdapterMismatch(f"adapter {adapter.adapter_id!r} does not fit the served base: {error}") from None
            self.model.eval()
            params = {n: p for n, p in self.model.named_parameters() if f".{name}." in n}
            self._slots[signature] = (name, params)
        return self._slots[signature]

    @staticmethod
    def _check_fit(adapter: LoadedAdapter, name: str, params: dict[str, torch.nn.Parameter]) -> None:
        problems, covered = [], set()
        for key, value in adapter.tensors.items():
            target = _slot_key(key, name)
            if target not in params:
                problems.append(f"{key} names no LoRA target of the served base")
            elif tuple(params[target].shape) != tuple(value.shape):
                problems.append(f"{key} is {list(value.shape)}, the served base needs {list(params[target].shape)}")
            else:
                covered.add(target)
        missing = sorted(set(params) - covered)
        if missing:
            problems.append(f"{len(missing)} LoRA weights of the served base are missing, e.g. {missing[0]}")
        if problems:
            raise AdapterMismatch(f"adapter {adapter.adapter_id!r} does not fit the served base "
                                  f"({len(problems)} problem(s)); first: {problems[0]}")


def _slot_key(key: str, name: str) -> str:
    """`...q_proj.lora_A.weight` (the file's key) -> `...q_proj.lora_A.{name}.weight` (the slot's parameter)."""
    return _LORA_KEY.sub(rf".lora_\1.{name}.weight", key)
