"""Renderers turn Episodes into model inputs; they know nothing of task families."""

from hf_icl.render.options import RenderOptions
from hf_icl.render.text import RenderedEpisode, RenderedSequence, TextRenderer

__all__ = ["RenderOptions", "RenderedEpisode", "RenderedSequence", "TextRenderer"]
