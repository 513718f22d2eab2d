"""Writes coordinator/assets/demo-tokenizer.json: the byte-level BPE tokenizer of the built-in
demo model of `bitnet-cluster generate` (used when no --model is given).

Requires `pip install tokenizers`. Run from the repository root:
    python scripts/make_demo_tokenizer.py
Deterministic: the same text and settings give the same file.
"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

TEXT = """
BitNet b1.58 is a language model whose weights are ternary: every weight is -1, 0 or +1.
Activations are quantized to eight bits per token, so a matrix product becomes additions
and subtractions of small integers. The model keeps its quality while it reads far fewer
bytes per token, which makes decoding faster and cheaper on CPUs and GPUs alike.
A serving engine splits a model across workers, schedules requests in batches, keeps the
key and value cache in pages, and streams tokens back to each client as soon as they exist.
The capital of France is Paris. The quick brown fox jumps over the lazy dog.
Hello, world! How are you today? I am fine, thank you. Tell me a story about a small robot
who learned to count to three: minus one, zero, plus one.
""" * 4

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=512,
    special_tokens=SPECIALS,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator([TEXT], trainer=trainer)
bos = tok.token_to_id("<|begin_of_text|>")
tok.post_processor = processors.TemplateProcessing(
    single="<|begin_of_text|> $A",
    pair="<|begin_of_text|> $A <|begin_of_text|> $B",
    special_tokens=[("<|begin_of_text|>", bos)],
)
tok.save("coordinator/assets/demo-tokenizer.json")
print("vocab", tok.get_vocab_size())
