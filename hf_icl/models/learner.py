"""The trainable in-context learner: a causal LM (pretrained, adapted or small) plus the
embedding renderer's read-in/read-out, with outputs computed only where a label is predicted.

Running the decoder, gathering the hidden states at label positions and applying the head to
those rows only skips most of the LM head (21% of SmolLM2's parameters, and most of its
activation memory at a 49k vocabulary). ``load_trained`` restores what ``save_learner`` wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.models.loading import load_model
from hf_icl.models.spec import LEARNER_FILE, ModelSpec
from hf_icl.render.embedding import (
    EmbeddingRenderer,
    ReadIn,
    load_read_in_out,
    paired_tokens,
    save_read_in_out,
)
from hf_icl.render.text import TextRenderer


@dataclass
class LabelBatch:
    """Model inputs plus, for every predicted label, where it is read and what it should be.

    ``rows``/``cols`` index the (batch, position) of each label's prediction; ``targets`` are
    label token ids (classification) or float targets (regression read-out); ``examples`` the
    label's index within its episode (for learning curves); ``candidates`` the label token ids.
    """

    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    examples: torch.Tensor
    candidates: torch.Tensor | None
    num_tokens: int

    def to(self, device: torch.device) -> LabelBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved["inputs"] = {k: v.to(device) for k, v in self.inputs.items()}
        for name in ("rows", "cols", "targets", "examples", "candidates"):
            if moved[name] is not None:
                moved[name] = moved[name].to(device)
        return replace(self, **moved)


def _positions(num_labels: int, final_only: bool) -> list[int]:
    return [num_labels - 1] if final_only else list(range(num_labels))


def text_batch(
    renderer: TextRenderer, episodes: list[Episode], final_only: bool, pad_id: int
) -> LabelBatch:
    """Right-padded token ids; every demonstration's label (or the last one) is a target."""
    sequences = [renderer.render_sequence(ep) for ep in episodes]
    for seq in sequences:
        if any(len(c) != 1 for c in seq.candidates):
            raise HfIclError(
                f"task {episodes[0].task!r}: training needs label words that differ "
                "in one token; choose other label_words"
            )
        if sorted(seq.candidates) != sorted(sequences[0].candidates):
            raise HfIclError(
                f"task {episodes[0].task!r}: episodes of one batch need the same "
                "label words (label_mode unrelated varies them)"
            )
    width = max(len(s.ids) for s in sequences)
    rows, cols, examples = [], [], []
    for b, seq in enumerate(sequences):
        for i in _positions(len(seq.label_positions), final_only):
            rows.append(b)
            cols.append(seq.label_positions[i])
            examples.append(i)
    ids = torch.tensor([s.ids + [pad_id] * (width - len(s.ids)) for s in sequences])
    rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
    return LabelBatch(
        inputs={"input_ids": ids},
        rows=rows_t,
        cols=cols_t,
        targets=ids[rows_t, cols_t + 1],
        examples=torch.tensor(examples),
        candidates=torch.tensor([c[0] for c in sequences[0].candidates]),
        num_tokens=sum(len(s.ids) for s in sequences),
    )


def embedding_batch(
    renderer: EmbeddingRenderer, episodes: list[Episode], final_only: bool
) -> LabelBatch:
    embedded = renderer.render(episodes)
    count, num_labels = embedded.labels.shape
    picked = _positions(num_labels, final_only)
    rows = torch.arange(count).repeat_interleave(len(picked))
    examples = torch.tensor(picked).repeat(count)
    candidates = None
    if renderer.label_token_ids is not None:
        candidates = torch.tensor(renderer.label_token_ids[: episodes[0].num_classes])
    width = renderer.positions_per_example
    return LabelBatch(
        inputs={"x": embedded.x, "labels": embedded.labels},
        rows=rows,
        cols=width * examples,
        targets=embedded.labels[rows, examples],
        examples=examples,
        candidates=candidates,
        num_tokens=count * width * num_labels,
    )


def _base(lm: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (the adapters stay active)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


class ICLModel(nn.Module):
    """What the trainer optimises and the evaluator queries: outputs at label positions only."""

    def __init__(
        self, lm: nn.Module, read_in: ReadIn | None = None, read_out: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.lm = lm
        self.read_in = read_in
        self.read_out = read_out

    @property
    def _no_split_modules(self) -> list[str] | None:
        """FSDP's auto-wrap policy shards per decoder layer, as the wrapped model declares."""
        return getattr(_base(self.lm), "_no_split_modules", None)

    def forward(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        x: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(loops, N, vocab) logits, or (loops, N) regression outputs, at (rows, cols).

        ``loops`` is 1 except for a looped model in training, whose last T loops all count.
        A paired-layout model (linear attention) reads the tokens [x; y] itself; its two-class
        output ŷ becomes the logits [0, ŷ].
        """
        base = _base(self.lm)
        if getattr(base, "paired_layout", False):
            wanted = cols.unique()  # sorted: only these queries are computed
            predicted = base(paired_tokens(x, labels), wanted)[
                :, rows, torch.searchsorted(wanted, cols)
            ]
            if labels.is_floating_point():
                return predicted
            return torch.stack([torch.zeros_like(predicted), predicted], -1)  # logistic loss
        embeds = None
        if input_ids is None:
            if self.read_in is None:
                raise HfIclError("this model has no read-in; render its tasks as text")
            embeds = self.read_in(x, labels, base.get_input_embeddings())
        out = base.get_decoder()(input_ids=input_ids, inputs_embeds=embeds)
        states = getattr(out, "loop_states", None) or (out.last_hidden_state,)
        picked = torch.stack([s[rows, cols] for s in states])
        if self.read_out is not None:
            return self.read_out(picked).squeeze(-1)
        return base.get_output_embeddings()(picked)


def small_model_renderer(model: ICLModel, episode: Episode) -> EmbeddingRenderer:
    """How a trained small model reads episodes like ``episode``: its layout, and class c as
    label token c, as the trainer rendered them."""
    labels = None if episode.is_regression else list(range(episode.num_classes))
    layout = "paired" if getattr(_base(model.lm), "paired_layout", False) else "interleaved"
    return EmbeddingRenderer(np.shape(episode.demo_x)[1], labels, layout)


def label_outputs(model: ICLModel, batch: LabelBatch) -> torch.Tensor:
    """The last loop's outputs at a batch's labels, as the trainer's evaluation reads them:
    (N, classes) logits over the candidate labels, or (N,) predicted targets."""
    batch = batch.to(next(model.parameters()).device)
    with torch.no_grad():
        last = model(batch.rows, batch.cols, **batch.inputs)[-1].float().cpu()
    return last if batch.candidates is None else last[:, batch.candidates.cpu()]


def loss_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over labels of the cross-entropy (token targets) or squared error (float targets),
    averaged over the loops that produced ``outputs``."""
    loops = outputs.shape[0]
    if targets.is_floating_point():
        per_label = (outputs.float() - targets).pow(2)
    else:
        per_label = F.cross_entropy(
            outputs.flatten(0, 1).float(), targets.repeat(loops), reduction="none"
        )
    return per_label.sum() / loops


def save_learner(
    model: ICLModel,
    folder: Path,
    tokenizer,
    info: dict,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """save_pretrained output (full model or adapter; nothing for a frozen one), tokenizer,
    read-in/out and how to load them. ``state``: the full state dict (gathered under FSDP)."""
    state = model.state_dict() if state is None else state
    if info["kind"] != "frozen":
        lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
        model.lm.save_pretrained(folder, state_dict=lm_state)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if model.read_in is not None:
        save_read_in_out(folder, model.read_in, state)
    (folder / LEARNER_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_trained(folder: str | Path) -> tuple[ICLModel, object | None]:
    """(model, tokenizer) from a train run's ``model/`` folder, in eval mode."""
    folder = Path(folder)
    path = folder / LEARNER_FILE
    if not path.is_file():
        raise HfIclError(f"{folder}: not a trained hf-icl model (no {LEARNER_FILE})")
    info = json.loads(path.read_text())
    tokenizer = None
    if info["kind"] == "small":
        from transformers import AutoModel, AutoModelForCausalLM

        import hf_icl.models.small  # noqa: F401  (registers the looped and linear architectures)
        from hf_icl.models.small_config import PAIRED_ARCHITECTURES

        paired = info["small_model"].get("architecture") in PAIRED_ARCHITECTURES
        lm = (AutoModel if paired else AutoModelForCausalLM).from_pretrained(folder)
        if not paired:
            from hf_icl.attention import restore_from_config

            restore_from_config(lm)  # momentum attention trained from scratch
    elif info["kind"] in ("adapter", "frozen"):
        adapter = str(folder) if info["kind"] == "adapter" else None
        lm, tokenizer = load_model(ModelSpec(**{**info["base_model"], "adapter": adapter}))
    else:
        # the saved config restores momentum attention itself
        skip = ("spec", "init", "momentum", "adapter")
        base = {k: v for k, v in info["base_model"].items() if k not in skip}
        lm, tokenizer = load_model(ModelSpec(**{**base, "spec": str(folder)}))
    model = ICLModel(lm, *(load_read_in_out(folder) or (None, None)))
    return model.eval(), tokenizer
