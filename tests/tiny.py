"""A tiny but real configuration for end-to-end tests: small Qwen3 teacher and base student
trained in seconds in a temporary cache, a small corpus, a short lm-eval generation."""

from study.config import ModelConfig, PretrainConfig, config_from_dict

TINY_MODEL = ModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, intermediate_size=64,
                         max_position_embeddings=256)


def tiny_config(cache_dir, **overrides):
    from dataclasses import asdict

    data = {
        "corpus": {"train_examples": 64, "val_examples": 8, "test_examples": 16},
        "teacher": {**asdict(PretrainConfig(model=TINY_MODEL, train_examples=96, steps=8,
                                            batch_size=16, eval_examples=8, eval_max_gen_toks=24,
                                            eval_batch_size=8))},
        "base": {**asdict(PretrainConfig(model=TINY_MODEL, train_examples=300, one_op=True,
                                         steps=8, batch_size=16, eval_examples=8, eval_max_gen_toks=24,
                                         eval_batch_size=8))},
        "batch_size": 8,
        "epochs": 1,
        "eval_examples": 8,
        "eval_batch_size": 8,
        "max_gen_toks": 24,
        "profile_steps": 2,
        "cache_dir": str(cache_dir),
    }
    data.update(overrides)
    return config_from_dict(data)
