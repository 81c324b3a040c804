"""Fine-tuning arms for `compare`: the model learns exactly the demonstrations ICL was shown.

Every arm trains on the first k demonstrations of the ICL prompt, in prompt order, one
demonstration per step (batch 1), with the causal-LM loss over all tokens of "input + label",
in eval mode (no dropout). Afterwards the base weights are restored bitwise without reloading
or copying the model: weight arms save and copy back only the tensors they train; the LoRA
arm removes its adapter, which never touched the base weights.

Arms (registry ``FT_ARMS``):

- ``dai`` (Dai et al.): the key and value projections of every layer, plain SGD.
- ``lora``: a peft LoRA adapter on ``target_modules``.
- ``full``: every parameter.
- ``layer_causal`` (Deutch et al.): the same key/value projections as ``dai``, but each layer
  learns from its own loss: its output goes through the model's final norm and LM head (the
  "logit lens"), and its input is detached, so no gradient crosses a layer boundary. Layer l's
  update thus depends only on layers ≤ l, as ICL's does. The per-layer losses are summed and
  stepped together, so all layers update once per demonstration and later demonstrations see
  the updated lower layers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.finetune_config import ArmSettings, Optimizer
from hf_icl.registry import Registry
from hf_icl.render import RenderedEpisode, TextRenderer

KV_MODULES = ("k_proj", "v_proj")


@dataclass
class TrainingDemo:
    """One demonstration as a training sequence."""

    ids: list[int]  # the tokenizer's special prefix + the demonstration ("input + label")
    skip: int  # leading special tokens: context, not demonstration tokens
    start: int  # position of the first demonstration token in the ICL prompt


def training_demos(
    renderer: TextRenderer, episode: Episode, rendered: RenderedEpisode, shots: int
) -> list[TrainingDemo]:
    """The first `shots` demonstrations with exactly the token ids the ICL prompt gives them."""
    if renderer.options.chat_template:  # a demonstration is its turns, up to the next user turn
        cuts = rendered.boundaries
        return [
            TrainingDemo(rendered.prefix_ids[cuts[i] : cuts[i + 1]], 0, cuts[i])
            for i in range(shots)
        ]
    delimiter = renderer.options.delimiter
    special = list(renderer.special_prefix)
    demos = []
    for i, text in enumerate(renderer.demo_texts(episode)[:shots]):
        ids = renderer.split_tokens(text + delimiter, [len(text)])[0]
        start = rendered.boundaries[i]
        if rendered.prefix_ids[start : start + len(ids)] != ids:
            raise HfIclError(
                f"demonstration {i} tokenizes differently inside the prompt than "
                "alone; change the delimiter"
            )
        demos.append(TrainingDemo(special + ids, len(special), start))
    return demos


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, skip: int) -> torch.Tensor:
    """Mean next-token loss over the demonstration tokens (the first token has no context
    unless a special prefix precedes it)."""
    first = max(skip, 1)
    return F.cross_entropy(logits[0, first - 1 : -1].float(), ids[0, first:])


def make_optimizer(name: Optimizer, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(params, lr=lr)


def kv_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The key and value projections' parameters of every layer."""
    params = [
        p
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in KV_MODULES
        for p in module.parameters()
    ]
    if not params:
        raise HfIclError(f"{type(model).__name__} has no {' / '.join(KV_MODULES)} modules to train")
    return params


FT_ARMS: Registry[type[FtArm]] = Registry("fine-tuning arm")


class FtArm(ABC):
    """Trains a loaded model in place on demonstrations and restores it afterwards."""

    # Only key/value projections change, with gradients per token: Dai et al.'s dual form (and
    # so the Kendall τ of hf_icl.analysis) applies exactly.
    dual_form: ClassVar[bool] = False

    def __init__(self, model: nn.Module, settings: ArmSettings) -> None:
        self.model = model
        self.settings = settings

    @abstractmethod
    def _attach(self, seed: int) -> list[nn.Parameter]:
        """Make the trainable tensors (requires_grad on them only); return them."""

    @abstractmethod
    def _detach(self) -> None:
        """Give the model back its base weights, bitwise."""

    def loss(self, ids: torch.Tensor, skip: int) -> torch.Tensor:
        return lm_loss(self.model(input_ids=ids).logits, ids, skip)

    @contextmanager
    def fine_tuned(self, demos: list[TrainingDemo], lr: float, seed: int = 0) -> Iterator[None]:
        """Inside: the model fine-tuned on `demos` in order; on exit: the base model again."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        params = self._attach(seed)
        try:
            self._train(params, demos, lr)
            yield
        finally:
            self._detach()
            for p, flag in flags:
                p.requires_grad_(flag)

    def _train(self, params: list[nn.Parameter], demos: list[TrainingDemo], lr: float) -> None:
        optimizer = make_optimizer(self.settings.optimizer, params, lr)
        device = next(self.model.parameters()).device
        with torch.enable_grad():
            for _ in range(self.settings.epochs):
                for demo in demos:
                    self.loss(torch.tensor([demo.ids], device=device), demo.skip).backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)


class WeightArm(FtArm):
    """Trains some base tensors; restores them from a copy of those tensors only."""

    @abstractmethod
    def trained_parameters(self) -> list[nn.Parameter]:
        """The base tensors this arm trains."""

    def _attach(self, seed: int) -> list[nn.Parameter]:
        params = self.trained_parameters()
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        self._saved = [p.detach().clone() for p in params]
        self._params = params
        return params

    @torch.no_grad()
    def _detach(self) -> None:
        for p, saved in zip(self._params, self._saved):
            p.copy_(saved)
        self._saved = []


@FT_ARMS.register("dai")
class DaiArm(WeightArm):
    dual_form = True

    def trained_parameters(self) -> list[nn.Parameter]:
        return kv_parameters(self.model)


@FT_ARMS.register("full")
class FullArm(WeightArm):
    def trained_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())


@FT_ARMS.register("layer_causal")
class LayerCausalArm(DaiArm):
    def loss(self, ids: torch.Tensor, skip: int) -> torch.Tensor:
        decoder = self.model.get_decoder()
        if not hasattr(decoder, "norm") or not hasattr(decoder, "layers"):
            raise HfIclError(
                f"layer_causal needs a decoder with .layers and a final .norm; "
                f"{type(decoder).__name__} has not"
            )
        outputs: list[torch.Tensor] = []
        hooks = [
            h
            for layer in decoder.layers
            for h in (
                layer.register_forward_pre_hook(_detach_input, with_kwargs=True),
                layer.register_forward_hook(lambda m, a, out: outputs.append(_first(out))),
            )
        ]
        try:
            self.model(input_ids=ids, logits_to_keep=1)
        finally:
            for hook in hooks:
                hook.remove()
        head = self.model.get_output_embeddings()
        return sum(lm_loss(head(decoder.norm(h)), ids, skip) for h in outputs)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _detach_input(module: nn.Module, args: tuple, kwargs: dict):
    """Stop-gradient at a layer's input: its loss cannot reach the layers below."""
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}


@FT_ARMS.register("lora")
class LoraArm(FtArm):
    """A fresh adapter per episode (seeded), removed afterwards; base weights stay frozen."""

    def _attach(self, seed: int) -> list[nn.Parameter]:
        from peft import LoraConfig

        from hf_icl.models import add_lora

        s = self.settings
        config = LoraConfig(
            r=s.lora_rank,
            lora_alpha=s.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(s.target_modules),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                self._peft = add_lora(self.model, config)
            except ValueError as err:
                raise HfIclError(f"lora: {' '.join(str(err).split())[:200]}") from None
        return [p for p in self.model.parameters() if p.requires_grad]

    def _detach(self) -> None:
        self._peft.unload()
        del self._peft


def make_arm(model: nn.Module, settings: ArmSettings) -> FtArm:
    return FT_ARMS.get(settings.name, where="finetune.arms")(model, settings)


@dataclass
class HeldOut:
    """A held-out episode for the learning-rate sweep: its demos, rendering and gold labels."""

    demos: list[TrainingDemo]
    rendered: RenderedEpisode
    gold: np.ndarray


def choose_lr(
    arm: FtArm,
    candidates: list[float],
    episodes: list[HeldOut],
    score: Callable[[RenderedEpisode], np.ndarray],
) -> float:
    """The candidate whose fine-tuned model scores the held-out queries best zero-shot:
    highest accuracy, ties broken by the mean log-probability of the gold label."""
    best, best_key = candidates[0], (-np.inf, -np.inf)
    for lr in candidates:
        correct, gold_logp = [], []
        for i, episode in enumerate(episodes):
            with arm.fine_tuned(episode.demos, lr, seed=i):
                scores = score(episode.rendered)
            log_probs = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
            correct += list(scores.argmax(1) == episode.gold)
            gold_logp += list(log_probs[np.arange(len(episode.gold)), episode.gold])
        key = (float(np.mean(correct)), float(np.mean(gold_logp)))
        if key > best_key:
            best, best_key = lr, key
    return best
