"""A tiny random Llama and a byte-level BPE tokenizer trained here, saved like a real checkpoint."""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "An image of road from the drive dataset. It includes paved lanes and excludes sidewalks.",
    "An image of car from the drive dataset. Passenger cars, not trucks or buses.",
    "An image of sky from the city dataset. Everything above the horizon line.",
    "An image of person from the city dataset. People walking or standing, not riders.",
    "An image of traffic sign from the drive dataset. Signs on poles; the pole itself is excluded.",
] * 4


def build_tiny_llama(out: Path, *, seed: int = 0, hidden: int = 64) -> Path:
    """Write a 2-layer Llama (LlamaForCausalLM) and its tokenizer (no pad token, like Llama-2) to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out
