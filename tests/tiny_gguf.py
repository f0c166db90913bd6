"""Tiny GGUF models whose answers are known in advance, for a real llama-server.

A one-layer llama-architecture model is built by hand so that greedy decoding
(or any sampling: the winning logit leads by dozens) walks a fixed chain of
whole-string tokens, like a bigram machine:

    logit(next) = A[current, next] + B[mode, next] + bias[next]

- the token embedding is one-hot (plus a constant dimension), so the output
  projection reads the *current* token (``A``) and a constant (``bias``);
- attention with a constant query looks for *trigger* tokens in the prompt
  (tool names the chat template writes into the system prompt, the
  ``<tool_response>`` it writes after a tool result, a few words a test
  writes); the strongest trigger kind wins the softmax and its value becomes
  the *mode* (``B``), which picks where the chain starts;
- the key/query live in the slowest RoPE pair with a huge frequency base, so
  position does not disturb them; the feed-forward block is all zeros.

Chains (the prompt always ends with ``<|im_start|>assistant\\n``, i.e. "\\n"):

    default      Hello from a tiny model.            (Qwen3 model: <think>...</think> first)
    get_time     <tool_call> get_time {"tz": "UTC"}  (the tool offered, or named)
    get_weather  <tool_call> get_weather {"city": "Paris"}  ({"location": "Paris"} when that is its parameter)
    parallel please  both calls, get_time then get_weather
    tool result  Got it, thanks.
    lalala       " la" forever (until max tokens or the context is full)
    json grammar {"answer": "yes"}                   (a grammar forbids "Hello")
    exec_command <tool_call> exec_command {"cmd": COMMAND}  (Codex's shell tool offered as a function;
                 the Qwen3 model thinks first)

The tokenizer is GPT-2 style byte-level BPE: every byte is a token, so any
prompt tokenizes; the chain's strings are user-defined tokens, which llama.cpp
matches in prompts too and prints verbatim. Only the ``gguf`` package (and
numpy) is needed; the chat templates are real ones, passed in as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["COMMAND", "TEXT", "THOUGHT", "ANSWER_AFTER_TOOL", "TIME_ARGS", "WEATHER_ARGS", "JSON_ANSWER", "write_model"]

TEXT = "Hello from a tiny model."
THOUGHT = "Thinking it over."
ANSWER_AFTER_TOOL = "Got it, thanks."
TIME_ARGS = {"tz": "UTC"}
WEATHER_ARGS = {"city": "Paris"}
JSON_ANSWER = {"answer": "yes"}
# What the model runs through Codex's exec_command tool when it is offered.
COMMAND = "echo run by a tiny model | tee tiny.txt"
# A schema whose llama.cpp grammar admits exactly the chain's JSON tokens.
JSON_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}

_CALL = '<tool_call>\n{"name": "%s", "arguments": '
# Chain tokens, by role. Their texts must be distinct (one id per text).
_CHAIN = {
    "HELLO": "Hello", "FROM": " from", "A": " a", "TINY": " tiny", "MODEL": " model.",
    "THINK_OPEN": "<think>\n", "THOUGHT": THOUGHT, "THINK_CLOSE": "\n</think>\n\n",
    "CALL_T": _CALL % "get_time", "ARGS_T": '{"tz": "UTC"}}', "END_T": "\n</tool_call>",
    "CALL_W": _CALL % "get_weather", "CALL_W2": "\n" + _CALL % "get_weather",
    "ARGS_W": '{"city": "Paris"}}\n</tool_call>',
    "ARGS_L": '{"location": "Paris"}}\n</tool_call>',
    "GOT": "Got", "IT": " it", "THANKS": ", thanks.",
    "LA": " la",
    "J1": '{"answer": "', "J2": "yes", "J3": '"}',
    "CALL_X": _CALL % "exec_command", "ARGS_X": '{"cmd": %s}}\n</tool_call>' % json.dumps(COMMAND),
}
# Trigger tokens: (mode index, attention score). A higher score wins outright.
_TRIGGERS = {
    "get_time": (0, 40.0),
    "get_weather": (1, 40.0),
    '"location"': (6, 60.0),  # a get_weather whose parameter is "location" (the conformance suites')
    "lalala": (2, 80.0),
    "parallel please": (4, 80.0),  # not "parallel": Codex's instructions say that
    '{"name": "exec_command"': (5, 100.0),  # its signature in the template's <tools>, so only when offered
    "<tool_response>": (3, 120.0),
}
_MODES = 8  # width of the mode vector (one attention head)


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    types: list[int]
    ids: dict[str, int]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies store)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _vocab() -> _Vocab:
    from gguf import TokenType

    byte_chars = _bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)] + ["ĠĠ"]
    types = [TokenType.NORMAL] * len(tokens)
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        tokens.append(special)
        types.append(TokenType.CONTROL)
    for text in [*_CHAIN.values(), *_TRIGGERS]:
        tokens.append(text)
        types.append(TokenType.USER_DEFINED)
    assert len(set(tokens)) == len(tokens)
    return _Vocab(tokens, [int(t) for t in types], {t: i for i, t in enumerate(tokens)})


def _scores(vocab: _Vocab, *, thinking: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A[current, next], B[mode, next], bias[next]) in pre-normalisation units."""
    n = len(vocab.tokens)
    ids = {name: vocab.ids[text] for name, text in _CHAIN.items()}
    eos = vocab.ids["<|im_end|>"]
    newline = vocab.ids[_bytes_to_unicode()[ord("\n")]]
    a = np.zeros((n, n), dtype=np.float32)
    b = np.zeros((_MODES, n), dtype=np.float32)
    bias = np.zeros(n, dtype=np.float32)

    def chain(*names: str) -> None:
        for cur, nxt in zip(names, names[1:]):
            a[ids[cur], eos if nxt == "EOS" else ids[nxt]] = 20.0

    a[newline, ids["THINK_OPEN" if thinking else "HELLO"]] = 5.0
    chain("THINK_OPEN", "THOUGHT", "THINK_CLOSE", "HELLO")
    chain("HELLO", "FROM", "A", "TINY", "MODEL", "EOS")
    chain("CALL_T", "ARGS_T", "END_T")
    a[ids["END_T"], eos] = 8.0  # a second call (parallel mode, 12) may follow
    a[ids["END_T"], ids["CALL_T"]] = -30.0  # but never the same call again
    chain("CALL_W", "ARGS_W", "EOS")
    chain("CALL_W2", "ARGS_W")
    a[ids["CALL_W"], ids["ARGS_L"]] = 20.0
    chain("ARGS_L", "EOS")
    chain("GOT", "IT", "THANKS", "EOS")
    chain("LA", "LA")
    chain("J1", "J2", "J3", "EOS")
    chain("CALL_X", "ARGS_X", "EOS")
    a[newline, ids["CALL_W2"]] = -30.0  # never a second call first
    # Modes start their chains from "\n"; mid-chain the successor (20) still wins.
    b[0, ids["CALL_T"]] = 14.0
    b[1, ids["CALL_W"]] = 13.0  # both tools offered: get_time first (7 > 6.5 > 5)
    b[2, ids["LA"]] = 14.0
    b[3, ids["GOT"]] = 14.0
    b[4, ids["CALL_T"]] = 14.0
    b[4, ids["CALL_W2"]] = 12.0
    b[5, ids["CALL_X"]] = 14.0
    if thinking:  # Codex's tool offered: think first, then call it
        a[newline, ids["CALL_X"]] = -20.0
        b[5, ids["HELLO"]] = -40.0
    b[1, ids["ARGS_L"]] = -40.0  # the city argument, unless the tool's parameter is "location"
    b[6, ids["CALL_W"]] = 13.0
    b[6, ids["ARGS_W"]] = -40.0
    # Under a JSON grammar "Hello" is forbidden and this is the best allowed token.
    bias[ids["J1"]] = 4.0
    return a, b, bias


def write_model(path: Path, chat_template: str, *, thinking: bool = False, context_length: int = 4096) -> Path:
    """Write one tiny model with ``chat_template`` to ``path``."""
    import gguf

    vocab = _vocab()
    n_vocab = len(vocab.tokens)
    head_dim = 8
    const = n_vocab  # the always-on dimension
    mode0 = n_vocab + 1  # first mode dimension in the residual stream
    n_embd = -(-(n_vocab + 1 + _MODES) // 32) * 32
    n_ff = 32
    # x = rmsnorm(e_t + e_const) has sqrt(n_embd / 2) in both dimensions.
    unit = float(np.sqrt(n_embd / 2.0))

    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    embd[:, const] = 1.0

    # One attention head of head_dim dimensions (not n_embd / n_head: the GGUF
    # says so with key_length / value_length), so a prompt of tens of thousands
    # of byte tokens costs seconds, not minutes. Query and key in dims 6 (the
    # slowest RoPE pair: with a base of 1e12 it turns by 1e-9 rad per position).
    # Scores are pre-scaled by sqrt(head_dim) because llama.cpp divides by it.
    wq = np.zeros((head_dim, n_embd), dtype=np.float32)
    wk = np.zeros((head_dim, n_embd), dtype=np.float32)
    wv = np.zeros((head_dim, n_embd), dtype=np.float32)
    wo = np.zeros((n_embd, head_dim), dtype=np.float32)
    wq[6, const] = 1.0 / unit
    for text, (mode, score) in _TRIGGERS.items():
        token = vocab.ids[text]
        wk[6, token] = score * np.sqrt(head_dim) / unit
        wv[mode, token] = 1.0 / unit
    for mode in range(_MODES):
        wo[mode0 + mode, mode] = 1.0

    a, b, bias = _scores(vocab, thinking=thinking)
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    output[:, :n_vocab] = a.T
    output[:, const] = bias
    output[:, mode0 : mode0 + _MODES] = b.T

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("compat-asgi tiny " + ("qwen3" if thinking else "hermes"))
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e12)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(["Ġ Ġ"])
    writer.add_bos_token_id(vocab.ids["<|endoftext|>"])
    writer.add_eos_token_id(vocab.ids["<|im_end|>"])
    writer.add_eot_token_id(vocab.ids["<|im_end|>"])
    writer.add_pad_token_id(vocab.ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)

    ones = np.ones(n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    writer.add_tensor("blk.0.attn_q.weight", wq)
    writer.add_tensor("blk.0.attn_k.weight", wk)
    writer.add_tensor("blk.0.attn_v.weight", wv)
    writer.add_tensor("blk.0.attn_output.weight", wo)
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_gate.weight", np.zeros((n_ff, n_embd), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((n_ff, n_embd), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
