"""The `tiny-thinking` preset: the tiny synthetic checkpoint, briefly fitted to answer in the thinking format.

Random weights never write `◁think▷`, so nothing downstream of the engine (splitter, renderers, the
CLI's output modes) would see real markers arrive through real generation. This module fits the
tiny model's language model for a few seconds on a CPU so that, for any short prompt with or without
images, it replies with one fixed thinking-formatted text (`FITTED_REPLY`) and then `<|im_end|>`.
In the tiny tokenizer each marker is several BPE tokens, glued to the text around it, so streamed
generation delivers them split across tokens, as the real model does.

The fitted weights are written back in the official layout (the same names and shapes as
`synthetic.tensor_shapes`), so the checkpoint goes through the same loader as a hub download.
Only `model.language_model` and `lm_head` are trained; the vision tower and projector are frozen
and copied unchanged from the synthetic files.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_cli.conversation import Message
from kimi_cli.media.types import ImagePart, Part, TextPart
from kimi_cli.model.facts import THINK_CLOSE, THINK_OPEN

# Chosen so that in the tiny tokenizer no token occurs twice in the reply: each token then names its
# successor, and the fit learns little more than bigrams, which carry over to prompts of any length
# (a reply with repeated tokens needed attention over the reply, and broke after a 400-token image).
FITTED_THINKING = "The user asks what is in the picture. I see colours and lines."
FITTED_ANSWER = "A small test image!"
#: What the fitted model writes for any short prompt (followed by `<|im_end|>`).
FITTED_REPLY = f"{THINK_OPEN}{FITTED_THINKING}{THINK_CLOSE}{FITTED_ANSWER}"

#: Full-batch Adam steps and learning rate: about twice what greedy decoding needs to reproduce the
#: reply on prompts never trained on (25 steps suffice for seeds 0-3), in a few CPU seconds.
FIT_STEPS = 40
LEARNING_RATE = 5e-3
#: lm_head is multiplied by this after fitting. Scaling the logits is dividing the temperature:
#: greedy output is unchanged, and sampling at the recommended 0.8 behaves like 0.2, so it
#: reproduces the reply too, without the many more steps plain training would need for that.
LOGIT_SCALE = 4.0

#: Called with (steps done, steps in all) while fitting.
Progress = Callable[[int, int], None]

#: Varied user texts, so the reply does not hang on any particular prompt wording or length.
TRAIN_TEXTS = (
    "What is in this image?",
    "Describe the picture.",
    "hi",
    "Can you tell me what you see here, in detail, and list the colours?",
    "What is 2 + 2?",
    "请描述这张图片。",
    "Summarise the document in one sentence.",
    "Why is the sky blue? Think step by step before you answer.",
    "ok",
    "Write a haiku about a cat sitting on a wooden table next to a cup of coffee.",
    "Is there any text in the screenshot? Read it out.",
    "この画像には何が写っていますか。",
)

#: (width, height, colour) of the small images some examples carry: 1 to about 100 image tokens.
TRAIN_IMAGES = (
    (28, 28, "red"),
    (64, 48, "navy"),
    (100, 70, "green"),
    (200, 150, "orange"),
    (300, 224, "gray"),
)


@dataclass(frozen=True, eq=False)
class Example:
    """One teacher-forced training sequence: prompt + reply ids, labels only on the reply."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: Any  # np.ndarray [patches, 3, 14, 14] or None
    grid_hws: Any  # np.ndarray [images, 2] or None


def _image(width: int, height: int, colour: str, seed: int) -> Any:
    """A small deterministic picture: a coloured background with two shapes on it."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(img)
    s = seed % 7
    draw.rectangle((width // 4, height // 4 + s % 3, width // 2 + s, height // 2), fill="white")
    draw.ellipse((width // 2, height // 2, width - 2, height - 2), fill="yellow")
    return img


def training_conversations(seed: int = 0) -> Iterator[tuple[tuple[Message, ...], str | None]]:
    """(messages, system prompt) pairs: plain text, images before or after the text, two images,
    a follow-up turn after an earlier answer, and a custom system prompt."""
    for i, text in enumerate(TRAIN_TEXTS):
        parts: list[Part] = [TextPart(text)]
        if i % 3 != 0:
            w, h, colour = TRAIN_IMAGES[i % len(TRAIN_IMAGES)]
            img = ImagePart(_image(w, h, colour, seed + i), source=f"train-{i}.png")
            parts = [img, *parts] if i % 2 else [*parts, img]
        if i == 4:
            parts.append(ImagePart(_image(56, 56, "purple", seed), source="second.png"))
        messages: tuple[Message, ...] = (Message(role="user", parts=tuple(parts)),)
        if i == 5:
            messages = (Message.text("user", "Hello"), Message.text("assistant", FITTED_ANSWER), *messages)
        yield messages, ("You are a terse assistant." if i == 7 else None)


def build_examples(tokenizer: Any, proc_cfg: Any, seed: int = 0) -> list[Example]:
    """Tokenize every training conversation with the real prompt builder, reply appended."""
    from kimi_cli.model.prompt import build_prompt

    reply = tokenizer.encode(FITTED_REPLY) + [tokenizer.im_end_id]
    examples = []
    for messages, system in training_conversations(seed):
        prompt = build_prompt(messages, tokenizer, proc_cfg, system)
        ids = list(prompt.input_ids)
        examples.append(Example(ids + reply, [-100] * len(ids) + reply, prompt.pixel_values, prompt.grid_hws))
    return examples


def _collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded id, mask and label tensors; pixel values and grids concatenated in order."""
    import numpy as np
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    with_images = [e for e in examples if e.pixel_values is not None]
    pixels = grid = None
    if with_images:
        pixels = torch.from_numpy(np.concatenate([e.pixel_values for e in with_images]))
        hws = np.concatenate([e.grid_hws for e in with_images]).astype(np.int64)
        # The native vision tower takes (t, h, w) grids; a still image is t = 1.
        grid = torch.from_numpy(np.concatenate([np.ones((len(hws), 1), dtype=np.int64), hws], axis=1))
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": pixels, "grid": grid}


def _train_language_model_only(model: Any) -> list[Any]:
    """Only the language model and lm_head train; returns their parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def fit_reply(loaded: Any, seed: int = 0, steps: int = FIT_STEPS, progress: Progress | None = None) -> float:
    """Fit `loaded.model` in place to answer `FITTED_REPLY`; returns the last step's loss.

    Full-batch Adam on teacher-forced cross-entropy over the reply tokens, then lm_head scaled by
    `LOGIT_SCALE`. The caller's torch RNG state is left as it was (`fork_rng`); nothing random is
    drawn in fact (no dropout, no shuffling), the seed only pins it should that change. It runs on one
    CPU thread (`one_cpu_thread`). `progress(step, steps)` is called after each step.
    """
    import torch

    model = loaded.model
    batch = _collate(build_examples(loaded.tokenizer, loaded.processor_config, seed), loaded.tokenizer.pad_id)
    with one_cpu_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        params = _train_language_model_only(model)
        features = _image_features(model, batch)
        optim = torch.optim.Adam(params, lr=LEARNING_RATE)
        loss = torch.tensor(float("nan"))
        for step in range(steps):
            optim.zero_grad(set_to_none=True)
            loss = _loss(model, batch, features)
            loss.backward()
            optim.step()
            if progress is not None:
                progress(step + 1, steps)
        for p in model.parameters():
            p.requires_grad_(False)
        model.lm_head.weight.mul_(LOGIT_SCALE)
    model.eval()
    return float(loss.detach())


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Run torch's CPU work on one intra-op thread, then restore the caller's count.

    The tiny model's matrices are far too small to share: on a loaded machine a thread team made the
    fit up to 10x slower (a descheduled member stalls every barrier), and one thread also makes the
    fitted weights the same on every machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _image_features(model: Any, batch: dict[str, Any]) -> Any:
    """The frozen vision tower + projector output, computed once instead of on every step."""
    import torch

    if batch["pixel_values"] is None:
        return None
    with torch.no_grad():
        return model.model.get_image_features(batch["pixel_values"], batch["grid"], return_dict=True)


def _loss(model: Any, batch: dict[str, Any], features: Any) -> Any:
    """Mean next-token cross-entropy over the reply positions."""
    import torch

    mm = {"image": features} if features is not None else None
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        mm_encoder_outputs=mm,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100
    )


def official_language_tensors(model: Any, text: dict[str, Any]) -> dict[str, Any]:
    """The language model's weights under their official names (facts 2), fused experts split.

    Native `gate_up_proj` is [E, 2I, H] with the gate rows first (`chunk(2, dim=-1)` on its output
    in `DeepseekV3NaiveMoe`), `down_proj` is [E, H, I]: the inverse of transformers' deepseek_v3
    conversion mapping (MergeModulelist on dim 0, Concatenate gate + up on dim 1).
    """
    inter = text["moe_intermediate_size"]
    out: dict[str, Any] = {}
    for name, tensor in model.model.language_model.state_dict().items():
        if "rotary_emb" in name:
            continue  # recomputed from the config, never stored
        base = f"language_model.model.{name}"
        t = tensor.detach()
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = base.removesuffix("gate_up_proj")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:].clone()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = base.removesuffix("down_proj")
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].clone()
        else:
            out[base] = t.clone()
    out["language_model.lm_head.weight"] = model.lm_head.weight.detach().clone()
    return out


def _frozen_tensors(src: Path) -> dict[str, Any]:
    """Vision tower and projector tensors exactly as the synthetic checkpoint stored them."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for shard in sorted(src.glob("model-*.safetensors")):
        for name, t in load_file(str(shard)).items():
            if not name.startswith("language_model."):
                out[name] = t
    return out


def write_official_weights(out_dir: Path, src: Path, model: Any, preset_name: str = "tiny") -> int:
    """Write the fitted model as official-layout shards + index; returns the number of tensors.

    Tensors go in `synthetic.tensor_shapes` order, cut into shards of the preset's size, through
    the same writer as the synthetic checkpoints.
    """
    from kimi_cli.model.synthetic import get_preset, save_sharded, tensor_shapes

    p = get_preset(preset_name)
    tensors = {**_frozen_tensors(src), **official_language_tensors(model, p.text)}
    expected = dict(tensor_shapes(p.text, p.vision))
    actual = {name: tuple(t.shape) for name, t in tensors.items()}
    if actual != expected:
        wrong = sorted(set(actual.items()) ^ set(expected.items()))
        raise ValueError(f"fitted tensors differ from the official layout, e.g. {wrong[:3]}")
    return save_sharded(out_dir, ((name, tensors[name]) for name in expected), p.shard_bytes)


def _copy_side_files(src: Path, out_dir: Path, seed: int) -> None:
    """Config, tokenizer, processor and template files as written for `tiny`; a README that says fitted."""
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copyfile(f, out_dir / f.name)
    (out_dir / "README.md").write_text(
        f"# Synthetic Kimi-VL checkpoint (tiny-thinking, seed {seed})\n\n"
        "The tiny random checkpoint in the official file layout, with its language model briefly\n"
        "fitted (vision tower and projector left random) by `kimi synth --preset tiny-thinking`.\n"
        "For any short prompt, with or without images, it replies in the thinking format:\n\n"
        f"    {FITTED_REPLY}<|im_end|>\n\n"
        "It exists to test streaming of the thinking markers end to end; it knows nothing else.\n",
        encoding="utf-8",
    )


def write_thinking_checkpoint(out_dir: Path, seed: int = 0, progress: Progress | None = None) -> Path:
    """Write the `tiny-thinking` checkpoint (official layout) to `out_dir`; returns `out_dir`.

    Builds `tiny` with `seed` in a temporary directory, loads it on the CPU in float32, fits its
    language model to `FITTED_REPLY` (a few seconds) and writes the result next to copies of the
    side files. Byte-identical for a given seed and torch build (the fit runs on one thread).
    `progress(step, steps)` reports the fit.
    """
    from kimi_cli.model.checkpoint import load_model
    from kimi_cli.model.synthetic import write_checkpoint

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="kimi-fit-") as tmp, one_cpu_thread():
        src = write_checkpoint(Path(tmp), "tiny", seed, thinking=True)
        loaded = load_model(str(src), device="cpu", dtype="float32")
        fit_reply(loaded, seed, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        _copy_side_files(src, out_dir, seed)
        write_official_weights(out_dir, src, loaded.model)
    return out_dir
