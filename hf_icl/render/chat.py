"""Chat-template prompts: demonstrations as user/assistant turns, written as lm-eval writes them.

lm-eval's ``--apply_chat_template`` (multi-turn few-shot on by default) makes each demonstration
a user turn (its input) and an assistant turn (its answer without the target delimiter); with
``multiturn: false`` one user turn holds the raw few-shot text. The query is the last user turn,
an optional system message comes first, and the label or generation is read after the template's
generation prompt. The model's own ``apply_chat_template`` writes the text.

The demonstration turns are a text prefix of every prompt, so one demo prefix still serves all
queries and shot counts (the scorer's KV reuse). Where the query turn starts is found by
rendering a placeholder query, and every real prompt is checked against the template instead of
assuming its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hf_icl.errors import HfIclError

if TYPE_CHECKING:
    from hf_icl.episode import Episode
    from hf_icl.render.text import RenderedEpisode, RenderedSequence, TextRenderer

PLACEHOLDER = "\ue000"  # a private-use character: no template trims or escapes it
TEMPLATES = Path(__file__).resolve().parent / "chat_templates"


def bundled_template(name: str) -> str:
    """A model family's published chat template, for checkpoints (GGUF) that ship without one."""
    return (TEMPLATES / f"{name}.jinja").read_text()


@dataclass
class ChatPrompts:
    """Token ids of chat prompts: one demo prefix cut at every shot count, then each query turn."""

    prefix_ids: list[int]
    boundaries: list[int]  # boundaries[k]: prefix length covering the first k demos
    query_ids: list[list[int]]  # query turn + generation prompt, after k > 0 demos
    query_ids_alone: list[list[int]]  # the same after 0 demos
    suffix: str  # text between a query and its answer (the generation prompt)


def chat_messages(
    demos: Sequence[tuple[str, str]],
    query: str,
    multiturn: bool,
    system: str | None,
    delimiter: str,
) -> list[dict[str, str]]:
    """lm-eval's turns for demos ``(input, answer with its leading target delimiter)``."""
    turns = [{"role": "system", "content": system}] if system else []
    if not multiturn:
        text = "".join(x + a + delimiter for x, a in demos) + query
        return turns + [{"role": "user", "content": text}]
    for x, a in demos:
        turns += [{"role": "user", "content": x}, {"role": "assistant", "content": a.lstrip()}]
    return turns + [{"role": "user", "content": query}]


def check_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise HfIclError(
            f"render.chat_template: the tokenizer of {tokenizer.name_or_path!r} has "
            "no chat template; set render.chat_template: false for raw prompts"
        )


def _apply(tokenizer, turns: list[dict[str, str]], generation_prompt: bool = True) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as error:
        roles = "/".join(t["role"] for t in turns[:3])
        raise HfIclError(
            f"render.chat_template: the chat template of {tokenizer.name_or_path!r} "
            f"refuses turns {roles}/...: {error}"
        ) from None


def _around_placeholder(text: str) -> tuple[str, str]:
    if text.count(PLACEHOLDER) != 1:
        raise HfIclError(
            "render.chat_template: the chat template does not write the query "
            "verbatim; it cannot be used for few-shot prompts"
        )
    head, tail = text.split(PLACEHOLDER)
    return head, tail


def chat_prompts(
    renderer: TextRenderer, demos: Sequence[tuple[str, str]], queries: Sequence[str]
) -> ChatPrompts:
    """Chat prompts for every query after 0..len(demos) demonstrations, with a shared prefix."""
    tokenizer, options = renderer.tokenizer, renderer.options
    check_chat_template(tokenizer)

    def render(k: int, query: str) -> str:
        return _apply(
            tokenizer,
            chat_messages(demos[:k], query, options.multiturn, options.system, options.delimiter),
        )

    heads, tails = zip(
        *(_around_placeholder(render(k, PLACEHOLDER)) for k in range(len(demos) + 1))
    )
    full, suffix = heads[-1], tails[-1]
    if any(not full.startswith(h) for h in heads) or any(t != suffix for t in tails[1:]):
        raise HfIclError(
            "render.chat_template: the chat template writes earlier turns "
            "differently as more follow, so demonstrations cannot be a shared prefix"
        )
    for q in queries:
        if render(len(demos), q) != full + q + suffix:
            raise HfIclError(
                f"render.chat_template: the chat template rewrites the query "
                f"{q[:40]!r} (e.g. trims whitespace); strip it from the template"
            )
    special = (
        []
        if tokenizer.bos_token and full.startswith(tokenizer.bos_token)
        else list(renderer.special_prefix)
    )
    pieces = renderer.split_tokens(full, [len(h) for h in heads[:-1]])
    prefix = special + pieces[0]
    boundaries = [len(prefix)]
    for piece in pieces[1:]:
        prefix += piece
        boundaries.append(len(prefix))
    after = [renderer.split_tokens(full + q + suffix, [len(full)])[1] for q in queries]
    alone = [renderer.split_tokens(heads[0] + q + tails[0], [len(heads[0])])[1] for q in queries]
    return ChatPrompts(prefix, boundaries, after, alone, suffix)


def render_chat_episode(renderer: TextRenderer, episode: Episode) -> RenderedEpisode:
    """The scorer's inputs for a classification episode in chat form (labels read after the
    generation prompt, as lm-eval scores ``"" + choice`` with a chat template)."""
    from hf_icl.render.text import RenderedEpisode

    words = renderer.label_words(episode)
    labels = renderer.label_index(episode, episode.demo_y)
    demos = [(renderer.format_x(x), words[c]) for x, c in zip(episode.demo_x, labels)]
    queries = [renderer.format_x(x) for x in episode.query_x]
    content_free = episode.meta.get("content_free")
    if content_free is None and not isinstance(episode.query_x, list):
        content_free = renderer.options.numeric_template.format(x="N/A")
    prompts = chat_prompts(renderer, demos, queries + ([content_free] if content_free else []))
    try:
        shared, candidates = renderer._candidates(
            episode, queries[0] + prompts.suffix, [w.lstrip() for w in words]
        )
    except HfIclError as error:
        raise HfIclError(
            f"render.chat_template: label words tokenize differently after the "
            f"template's assistant prefix {prompts.suffix[-20:]!r}: {error}"
        ) from None
    after = [q + shared for q in prompts.query_ids]
    alone = [q + shared for q in prompts.query_ids_alone]
    n = len(queries)
    return RenderedEpisode(
        prefix_ids=prompts.prefix_ids,
        boundaries=prompts.boundaries,
        query_ids=after[:n],
        query_ids_alone=alone[:n],
        candidates=candidates,
        content_free_ids=(after[n], alone[n]) if content_free else None,
    )


def render_chat_sequence(renderer: TextRenderer, episode: Episode) -> RenderedSequence:
    """All demonstrations as one conversation (user/assistant turns); each label is predicted
    at the start of its assistant turn, the position the chat prompts read it from."""
    from hf_icl.render.text import RenderedSequence

    tokenizer, options = renderer.tokenizer, renderer.options
    check_chat_template(tokenizer)
    if not options.multiturn:
        raise HfIclError(
            "render.multiturn: false puts the labels inside one user turn; the "
            "sequential protocol and training read them in assistant turns "
            "(multiturn: true)"
        )
    words = renderer.label_words(episode)
    labels = renderer.label_index(episode, episode.demo_y)
    inputs = [renderer.format_x(x) for x in episode.demo_x]
    answers = [words[c].lstrip() for c in labels]
    turns = chat_messages(list(zip(inputs, answers)), "", True, options.system, options.delimiter)
    text = _apply(tokenizer, turns[:-1], generation_prompt=False)
    starts, cursor = [], 0
    for x, a in zip(inputs, answers):
        found = text.find(x, cursor)
        start = text.find(a, found + len(x)) if found >= 0 else -1
        if start < 0:
            raise HfIclError(
                "render.chat_template: the chat template rewrites a demonstration; "
                "it cannot be used for sequences"
            )
        starts.append(start)
        cursor = start + len(a)
    shared, candidates = renderer._candidates(
        episode, text[: starts[0]], [w.lstrip() for w in words]
    )
    special = (
        []
        if tokenizer.bos_token and text.startswith(tokenizer.bos_token)
        else list(renderer.special_prefix)
    )
    pieces = renderer.split_tokens(text, starts)
    ids, positions = special + pieces[0], []
    for c, piece in zip(labels, pieces[1:]):
        if piece[: len(shared) + 1] != shared + candidates[c][:1]:
            raise HfIclError(
                "render.chat_template: a label word tokenizes differently inside "
                "its assistant turn than after the generation prompt"
            )
        positions.append(len(ids) + len(shared) - 1)
        ids += piece
    return RenderedSequence(ids=ids, label_positions=positions, candidates=candidates)
