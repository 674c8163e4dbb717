"""Everything specific to Kimi-VL: checkpoint resolution and mapping, tokenizer, image processing, prompt."""
