"""A trainable expression editor: StarGAN-style G(face, expression mix) with a GANimation attention mask (GANmut).

`train_editor` learns it from real train faces; `ExpressionEditor.edit` moves faces toward a target expression at
a chosen intensity; `save`/`load_editor` keep it as one torch file of plain data.
"""

from __future__ import annotations

from fersynth.editor.editor import EDITOR_FILE, ExpressionEditor, load_editor
from fersynth.editor.training import EditorTrainingResult, train_editor

__all__ = ["EDITOR_FILE", "EditorTrainingResult", "ExpressionEditor", "load_editor", "train_editor"]
