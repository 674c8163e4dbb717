"""Where the warm TTFT of an image prompt goes on the GPU: the vision tower and the language model's
prefill, each timed (median of 5, device synchronised) and profiled by kernel (issue 14's TTFT).

    python benchmarks/prefill_probe.py --model DIR [--size 1792] [--rows 30] [--out DIR]

The prompt is the bench's: one `kimi_cli.bench.ttft.bench_image` plus its question, built and
embedded by the engine's own fast path (`prompt_embeddings`); the prefill is `FastDecoder.prefill`, with
and without `prefill_kernels` (their logits compared).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=1792)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--out", type=Path, help="write the profiler tables here")
    p.add_argument("--device", default="cuda", help="cpu: timings only, no profile (a check of the script)")
    args = p.parse_args()
    import torch

    from kimi_cli.bench.explore import profile_table, timed_ms
    from kimi_cli.bench.ttft import QUESTION, build_image_prompt, write_bench_image
    from kimi_cli.engine.fast import FastDecoder, bucket_length
    from kimi_cli.engine.fastpath import image_features, prompt_embeddings
    from kimi_cli.engine.plain import prompt_keys, suffix_grid, suffix_images
    from kimi_cli.model.checkpoint import load_model

    loaded = load_model(args.model, device=args.device)
    model = loaded.model
    image = write_bench_image(Path("/tmp"), args.size)
    with torch.inference_mode():
        _, prompt = build_image_prompt(loaded, image, QUESTION)
        ids, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
        pv, thw = suffix_images(prompt, runs, 0, model.device, model.dtype)
        embeds = prompt_embeddings(loaded, prompt, ids, runs, 0)
        lm = model.model.language_model
        decoders = {fused: FastDecoder(lm, model.lm_head, bucket_length(len(ids) + 64), model.device, model.dtype,
                                       fused_prefill=fused) for fused in (False, True)}

        host = suffix_grid(prompt, runs, 0)

        def vision():
            return image_features(model, pv, thw, host)

        def vision_device_bounds():
            return image_features(model, pv, thw)

        def prefill(fused):
            def run():
                dec = decoders[fused]
                dec.reset()
                return dec.prefill(embeds)
            return run

        print(f"prompt {len(ids)} tokens, image {prompt.image_tokens}", flush=True)
        logits = {fused: prefill(fused)().float() for fused in (False, True)}
        # the floor: transformers' own prefill in two chunks (the same arithmetic, rounded differently)
        dec = decoders[False]
        dec.reset()
        half = embeds.shape[1] // 2
        dec.prefill(embeds[:, :half])
        logits["halves"] = dec.prefill(embeds[:, half:]).float()

        def compare(name: str, other) -> None:
            rel = float((other - logits[False]).norm() / logits[False].norm())
            same = int(other.argmax()) == int(logits[False].argmax())
            print(f"{name} against transformers' prefill: relative logit difference {rel:.2e}, "
                  f"argmax {'same' if same else 'differs'}")

        compare("fused kernels", logits[True])
        compare("transformers in two chunks (the floor)", logits["halves"])
        print(f"vision {timed_ms(vision, 5):.1f} ms ({timed_ms(vision_device_bounds, 5):.1f} with the bounds on the "
              f"device), prefill {timed_ms(prefill(False), 5):.1f} ms (transformers), "
              f"{timed_ms(prefill(True), 5):.1f} ms (fused kernels)", flush=True)
        if args.device != "cuda":
            return
        tables = {"vision": vision, "prefill": prefill(False), "prefill_fused": prefill(True)}
        for name, fn in tables.items():
            table = profile_table(fn, rows=args.rows)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"profile_{name}.txt").write_text(table)
            total = [line for line in table.splitlines() if "CUDA time total" in line]
            print(f"{name}: {total[0] if total else ''}", flush=True)


if __name__ == "__main__":
    main()
