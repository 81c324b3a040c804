"""lm-eval ``generate_until`` tasks, generated from the cached demo prefix.

lm-eval writes every prompt (`fewshot_contexts`: description, demonstrations, delimiters); with
one demo list for all documents (first_n, fixed) each prompt is that list's text followed by
the document's ``doc_to_text``, so the prompts are cut into the scorer's shape — one demo
prefix, a boundary per shot count, then each document — and every document's greedy answer is
generated after the cached prefix, with the task's own ``until`` and ``max_gen_toks``. The
prompt text is checked against lm-eval's for every document, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_icl.errors import HfIclError
from hf_icl.lm_eval_tasks import DemoSelection, LmEvalTask, fewshot_contexts
from hf_icl.render.generation import GenerationPrompts
from hf_icl.render.text import TextRenderer

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HFLM default


@dataclass
class GenDocument:
    doc_id: int
    doc: dict
    target: str


def generation_documents(task: LmEvalTask, limit: int | None = None) -> list[GenDocument]:
    """The first ``limit`` evaluation documents of a generate_until task, with their answers."""
    if task.output_type != "generate_until":
        raise HfIclError(
            f"lm-eval task {task.name!r}: output_type {task.output_type!r} is not generate_until"
        )
    docs = []
    for doc_id, doc in enumerate(task.eval_docs(limit)):
        target = task.task.doc_to_target(doc)
        target = target[0] if isinstance(target, list) else target
        docs.append(GenDocument(doc_id, doc, str(target)))
    if not docs:
        raise HfIclError(f"lm-eval task {task.name!r} has no evaluation documents")
    return docs


def generation_settings(task: LmEvalTask) -> tuple[list[str], int]:
    """The task's stop strings and most generated tokens (lm-eval's defaults where unset)."""
    kwargs = dict(task.task.config.generation_kwargs or {})
    until = kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    new = kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens") or DEFAULT_MAX_GEN_TOKS
    if kwargs.get("do_sample") or kwargs.get("temperature", 0.0):
        raise HfIclError(
            f"lm-eval task {task.name!r}: sampling (do_sample / temperature > 0) is "
            "not supported; hf-icl decodes greedily"
        )
    return until, int(new)


def lm_eval_generation_prompts(
    renderer: TextRenderer,
    task: LmEvalTask,
    docs: list[GenDocument],
    max_shots: int,
    selection: DemoSelection,
) -> GenerationPrompts:
    """lm-eval's prompts for every document after 0..max_shots demonstrations, as one demo
    prefix (cut at each shot count) and each document's own text."""
    if not selection.shared(task):
        raise HfIclError(
            f"lm-eval task {task.name!r}: generation needs one demo list for every "
            "document (demos.selection first_n or fixed)"
        )
    texts = [task.task.doc_to_text(d.doc) for d in docs]
    heads = []
    for k in range(max_shots + 1):
        context = fewshot_contexts(task, [docs[0].doc], k, selection)[0]
        if not context.endswith(texts[0]):
            raise HfIclError(
                f"lm-eval task {task.name!r}: a prompt does not end with the "
                "document's text, so its demonstrations cannot be shared"
            )
        heads.append(context[: len(context) - len(texts[0])])
    full = heads[-1]
    if any(not full.startswith(h) for h in heads):
        raise HfIclError(
            f"lm-eval task {task.name!r}: prompts with fewer demonstrations are not "
            "a prefix of prompts with more"
        )
    for text, context in zip(
        texts, fewshot_contexts(task, [d.doc for d in docs], max_shots, selection)
    ):
        if context != full + text:
            raise HfIclError(
                f"lm-eval task {task.name!r}: the documents' prompts differ in more "
                "than their own text"
            )
    tokenizer = renderer.tokenizer
    bos = tokenizer.bos_token
    special = [] if bos and full.startswith(bos) else list(renderer.special_prefix)
    pieces = renderer.split_tokens(full + texts[0], [len(h) for h in heads])
    prefix = special + pieces[0]
    boundaries = [len(prefix)]
    for piece in pieces[1:-1]:
        prefix += piece
        boundaries.append(len(prefix))
    after = [renderer.split_tokens(full + t, [len(full)])[1] for t in texts]
    alone = [renderer.split_tokens(heads[0] + t, [len(heads[0])])[1] for t in texts]
    until, _ = generation_settings(task)
    return GenerationPrompts(prefix, boundaries, after, alone, until, [d.target for d in docs])
