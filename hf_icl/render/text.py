"""Text renderer: Episodes → token ids with the exact position of every label.

Prompts are raw text: demonstrations ``x + label_word`` joined by the delimiter, then the query.
The whole demo prefix is tokenized once and cut at character boundaries, so its token ids equal
those of any k-shot prompt's first k demos (what lets the scorer reuse one KV cache for all k).
A cut inside a token would break that equality and is reported as an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.render.options import RenderOptions

LETTERS = [f" {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]


@dataclass
class RenderedEpisode:
    """`queries` protocol inputs: one demo prefix shared by all queries and shot counts."""

    prefix_ids: list[int]  # special tokens + all demonstrations (each followed by delimiter)
    boundaries: list[int]  # boundaries[k]: prefix length covering the first k demos
    query_ids: list[list[int]]  # per query, as it follows a delimiter (k > 0)
    query_ids_alone: list[list[int]]  # per query, as the first text of the prompt (k = 0)
    candidates: list[
        list[int]
    ]  # label token ids per class (common leading tokens moved to queries)
    content_free_ids: tuple[list[int], list[int]] | None  # (after delimiter, alone)


@dataclass
class RenderedSequence:
    """`sequential` protocol inputs: one sequence whose every label is predicted from its prefix."""

    ids: list[int]
    label_positions: list[int]  # position whose next-token distribution predicts label i
    candidates: list[list[int]]


class TextRenderer:
    """Renders any Episode (text or numeric) for any tokenizer."""

    def __init__(self, tokenizer, options: RenderOptions | None = None) -> None:
        self.tokenizer = tokenizer
        self.options = options or RenderOptions()
        with_special = tokenizer("a", add_special_tokens=True).input_ids
        plain = tokenizer("a", add_special_tokens=False).input_ids
        self.special_prefix = (
            with_special[: with_special.index(plain[0])] if plain[0] in with_special else []
        )

    # text ------------------------------------------------------------------------------------
    def format_x(self, x) -> str:
        if isinstance(x, str):
            return x
        scale = 10**self.options.precision
        numbers = " ".join(str(int(v)) for v in np.rint(np.asarray(x, dtype=np.float64) * scale))
        return self.options.numeric_template.format(x=numbers)

    def label_words(self, episode: Episode) -> list[str]:
        if episode.label_words:
            return list(episode.label_words)
        if episode.is_regression:
            return [f" {d}" for d in range(self.options.target_bins)]
        words = self.options.label_words or LETTERS
        if episode.num_classes > len(words):
            raise HfIclError(
                f"task {episode.task!r}: {episode.num_classes} classes but only "
                f"{len(words)} label words"
            )
        return list(words[: episode.num_classes])

    def bin_centres(self) -> np.ndarray:
        low, high = self.options.target_range
        edges = np.linspace(low, high, self.options.target_bins + 1)
        return (edges[:-1] + edges[1:]) / 2

    def label_index(self, episode: Episode, y) -> np.ndarray:
        """Class index per example; regression targets are binned (clipped to the range)."""
        y = np.asarray(y)
        if not episode.is_regression:
            return y.astype(np.int64)
        low, high = self.options.target_range
        scaled = (y - low) / (high - low) * self.options.target_bins
        return np.clip(np.floor(scaled), 0, self.options.target_bins - 1).astype(np.int64)

    def demo_texts(self, episode: Episode) -> list[str]:
        words = self.label_words(episode)
        labels = self.label_index(episode, episode.demo_y)
        return [self.format_x(x) + words[c] for x, c in zip(episode.demo_x, labels)]

    # tokens ----------------------------------------------------------------------------------
    def split_tokens(self, text: str, cuts: list[int]) -> list[list[int]]:
        """Tokenize ``text`` once and split the ids at character positions ``cuts``."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        pieces: list[list[int]] = [[] for _ in range(len(cuts) + 1)]
        bounds = sorted(cuts)
        for tid, (start, end) in zip(enc.input_ids, enc.offset_mapping):
            straddled = [c for c in bounds if start < c < end]
            if straddled:
                c = straddled[0]
                raise HfIclError(
                    f"the tokenizer merges text across a prompt boundary: {text[max(0, c - 15) : c]!r} | "
                    f"{text[c : c + 15]!r}; change the template or delimiter"
                )
            pieces[int(np.searchsorted(bounds, start, side="right"))].append(tid)
        return pieces

    def _candidates(
        self, episode: Episode, query_text: str, words: list[str] | None = None
    ) -> tuple[list[int], list[list[int]]]:
        """Label token ids in context, with the tokens all candidates share split off."""
        words = words or self.label_words(episode)
        cands = [self.split_tokens(query_text + w, [len(query_text)])[1] for w in words]
        for word, ids in zip(words, cands):
            if not ids:
                raise HfIclError(f"label word {word!r} renders to no tokens")
        if len({tuple(c) for c in cands}) != len(cands):
            shown = {w: self.tokenizer.convert_ids_to_tokens(c) for w, c in zip(words, cands)}
            raise HfIclError(f"label words are not distinguishable after tokenization: {shown}")
        shared: list[int] = []
        while all(len(c) > 1 and c[0] == cands[0][0] for c in cands):
            shared.append(cands[0][0])
            cands = [c[1:] for c in cands]
        return shared, cands

    def _query(self, text: str, shared: list[int]) -> tuple[list[int], list[int]]:
        delim = self.options.delimiter
        after = self.split_tokens(delim + text, [len(delim)])[1]
        alone = self.tokenizer(text, add_special_tokens=False).input_ids
        return after + shared, alone + shared

    def demo_prefix(self, demos: list[str], first_query: str) -> tuple[list[int], list[int]]:
        """Token ids of all demonstrations (each followed by the delimiter) and the prefix length
        after each shot count, cut from one tokenization of the whole prompt."""
        text, starts = "", []
        for demo in demos:
            starts.append(len(text))
            text += demo + self.options.delimiter
        pieces = self.split_tokens(text + first_query, starts[1:] + [len(text)])
        prefix = list(self.special_prefix)
        boundaries = [len(prefix)]
        for piece in pieces[:-1]:
            prefix += piece
            boundaries.append(len(prefix))
        return prefix, boundaries

    def render_episode(self, episode: Episode) -> RenderedEpisode:
        if self.options.chat_template:
            from hf_icl.render.chat import render_chat_episode

            return render_chat_episode(self, episode)
        queries = [self.format_x(x) for x in episode.query_x]
        prefix, boundaries = self.demo_prefix(self.demo_texts(episode), queries[0])
        shared, candidates = self._candidates(episode, queries[0])
        rendered = [self._query(q, shared) for q in queries]
        content_free = episode.meta.get("content_free")
        if content_free is None and not isinstance(episode.query_x, list):
            content_free = self.options.numeric_template.format(x="N/A")
        return RenderedEpisode(
            prefix_ids=prefix,
            boundaries=boundaries,
            query_ids=[r[0] for r in rendered],
            query_ids_alone=[r[1] for r in rendered],
            candidates=candidates,
            content_free_ids=self._query(content_free, shared) if content_free else None,
        )

    def render_sequence(self, episode: Episode) -> RenderedSequence:
        """All demonstrations as one sequence; every label is a prediction target."""
        if self.options.chat_template:
            from hf_icl.render.chat import render_chat_sequence

            return render_chat_sequence(self, episode)
        delim = self.options.delimiter
        words = self.label_words(episode)
        labels = self.label_index(episode, episode.demo_y)
        text, cuts = "", []
        for i, (x, c) in enumerate(zip(episode.demo_x, labels)):
            if i:
                text += delim
            text += self.format_x(x)
            cuts += [len(text), len(text) + len(words[c])]
            text += words[c]
        pieces = self.split_tokens(text, cuts)
        shared, candidates = self._candidates(episode, self.format_x(episode.demo_x[0]))
        ids, positions = list(self.special_prefix), []
        for i in range(len(labels)):
            ids += pieces[2 * i]
            label_tokens = pieces[2 * i + 1]
            ids += label_tokens[: len(shared)]
            positions.append(len(ids) - 1)
            ids += label_tokens[len(shared) :]
        ids += pieces[-1]
        return RenderedSequence(ids=ids, label_positions=positions, candidates=candidates)
