"""The embedded default's tokenizer: a byte-level BPE trained on the synthetic corpus.

It is a real Hugging Face fast tokenizer (saved with ``save_pretrained``, loadable by lm-eval
or vLLM) with:
- digits and arithmetic symbols split into single tokens before BPE, so every number and
  operator is one token and the model can learn the arithmetic;
- ``<think>``/``</think>`` as single *non-special* added tokens: lm-eval decodes generations
  with ``skip_special_tokens=True``, which would otherwise delete them from the output;
- ``<|end|>`` as eos, ``<|pad|>`` as pad, and a chat template rendering
  ``<|user|>{question}<|assistant|>`` as the prompt section P.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

THINK, END_THINK = "<think>", "</think>"
EOS, PAD, USER, ASSISTANT = "<|end|>", "<|pad|>", "<|user|>", "<|assistant|>"

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 192) -> PreTrainedTokenizerFast:
    """Train the BPE on ``texts`` (completions and questions of the corpus)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # One token per digit and per arithmetic/bracket symbol: merges like ")*" or "=7"
            # would hide the structure the model must learn.
            pre_tokenizers.Split(Regex(r"[0-9()+\-*=]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, EOS, USER, ASSISTANT]
    # Every printable ASCII character gets a token (in byte-level form: space is "Ġ", newline
    # "Ċ"), so text outside the training corpus still encodes instead of losing characters.
    alphabet = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    # Non-special so that generations decoded with skip_special_tokens=True keep them.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK, END_THINK)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=1024,
    )


def render_prompt(tokenizer: PreTrainedTokenizerFast, question: str) -> str:
    """The prompt section P: the chat-formatted user turn plus the generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def render_sequence(tokenizer: PreTrainedTokenizerFast, question: str, completion: str) -> str:
    """P + <think> CoT </think> A + eos, through the chat template (one way to format)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": completion}],
        tokenize=False,
    )


def think_ids(tokenizer: PreTrainedTokenizerFast) -> tuple[int, int]:
    """Ids of <think> and </think>; a tokenizer that splits them is unusable for this study."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (THINK, END_THINK)]
    for tok, i in zip((THINK, END_THINK), ids):
        if i is None or i == tokenizer.unk_token_id or tokenizer.encode(tok, add_special_tokens=False) != [i]:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has no single token for {tok}; "
                "add it as a (non-special) added token"
            )
    return ids[0], ids[1]
