"""A Hugging Face tokenizer that encodes exactly like the project's SentencePiece model.

transformers 5 builds tokenizers from ``tokenizer.json`` (the ``tokenizers`` library); reading
a SentencePiece ``.model`` itself needs the protobuf package, which a GPU image may lack. So
the few fields needed are read here straight from the protobuf wire format (pieces, scores,
types, the trainer's byte fallback and the normaliser spec), and the pipeline is assembled the
way transformers' own ``SpmConverter.build_tokenizer_from_spm_proto`` does: the precompiled
normalisation map, SentencePiece's whitespace rules, the dummy prefix, BPE merges ranked by
piece score (or a Unigram model), byte fallback. The export test checks the encodings match.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from runcontract.errors import UserError

# sentencepiece_model.proto: SentencePiece.Type and TrainerSpec.ModelType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2


@dataclass
class SpmPiece:
    piece: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SpmModel:
    """What the HF pipeline needs from a SentencePiece ModelProto (defaults are the proto's)."""

    pieces: list[SpmPiece] = field(default_factory=list)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """Yield (field number, wire type, value) of one protobuf message; value is an int or bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated message")
        yield number, wire, value


def read_spm_model(path: str | os.PathLike) -> SpmModel:
    """Parse the parts of a SentencePiece ``.model`` file that the HF pipeline needs."""
    path = Path(path)
    try:
        data = path.read_bytes()
        model = SpmModel()
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:  # repeated SentencePiece pieces
                piece = SpmPiece("")
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        piece.piece = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        piece.score = struct.unpack("<f", v)[0]
                    elif n == 3 and w == 0:
                        piece.type = v
                model.pieces.append(piece)
            elif number == 2 and wire == 2:  # TrainerSpec
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        model.model_type = v
                    elif n == 35 and w == 0:
                        model.byte_fallback = bool(v)
                    elif n == 40 and w == 0:
                        model.unk_id = v
            elif number == 3 and wire == 2:  # NormalizerSpec
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        model.normalizer_name = v.decode("utf-8")
                    elif n == 2 and w == 2:
                        model.precompiled_charsmap = bytes(v)
                    elif n == 3 and w == 0:
                        model.add_dummy_prefix = bool(v)
                    elif n == 4 and w == 0:
                        model.remove_extra_whitespaces = bool(v)
                    elif n == 5 and w == 0:
                        model.escape_whitespaces = bool(v)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable SentencePiece model ({exc}); pass the tokenizer/spm.model written by trainer.tokenizer.") from None
    if not model.pieces:
        raise UserError(f"{path} holds no vocabulary pieces; it is not a SentencePiece model. Pass tokenizer/spm.model.")
    if model.model_type not in (UNIGRAM, BPE):
        raise UserError(f"{path} is a SentencePiece model of type {model.model_type} (word/char); only BPE and unigram models can be exported.")
    return model


def build_backend_tokenizer(spm: SpmModel):
    """A ``tokenizers.Tokenizer`` reproducing ``SentencePieceProcessor.encode`` / ``decode``."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE as BPEModel
    from tokenizers.models import Unigram

    user_defined = [p.piece for p in spm.pieces if p.type == USER_DEFINED]
    if spm.model_type == BPE:
        vocab = {p.piece: i for i, p in enumerate(spm.pieces)}
        # A merge (left, right) exists for each split of a normal piece into two normal pieces;
        # SentencePiece applies the highest-scoring piece first.
        normal = {p.piece: (p.score, i) for i, p in enumerate(spm.pieces) if p.type == NORMAL}
        ranked = []
        for token, (score, index) in normal.items():
            for split in range(1, len(token)):
                left, right = token[:split], token[split:]
                if left in normal and right in normal:
                    ranked.append((-score, index, left, right))
        merges = [(left, right) for _, _, left, right in sorted(ranked)]
        tokenizer = Tokenizer(BPEModel(vocab=vocab, merges=merges, unk_token=spm.pieces[spm.unk_id].piece, fuse_unk=True,
                                       byte_fallback=spm.byte_fallback, dropout=None, ignore_merges=bool(user_defined)))
    else:
        tokenizer = Tokenizer(Unigram([(p.piece, p.score) for p in spm.pieces], unk_id=spm.unk_id, byte_fallback=spm.byte_fallback))

    # Normaliser, in SentencePiece's order: character map, whitespace rules, escaping.
    steps = []
    if spm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    if spm.remove_extra_whitespaces:
        # Only spaces: SentencePiece leaves other whitespace (newlines after the map) alone.
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spm.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spm.add_dummy_prefix:
        # Metaspace skips its prefix when the text already starts with "▁"; SentencePiece does not.
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)

    pre = []
    if spm.add_dummy_prefix:
        pre.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False))
    if user_defined:  # SentencePiece emits user-defined pieces whole and never merges across them
        pattern = "|".join(re.escape(piece) for piece in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if pre:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(pre)

    steps = [decoders.Replace("▁", " ")]
    if spm.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if spm.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1))  # after Fuse: only the text's first space
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def build_hf_tokenizer(spm_model_path: str | os.PathLike, bos_id: int | None, eos_id: int | None, add_bos: bool = False,
                       pad_id: int | None = None):
    """A ``PreTrainedTokenizerFast`` for ``spm_model_path``: loads with ``AutoTokenizer`` from the
    saved folder (tokenizer.json keeps the whole pipeline). ``add_bos`` prepends BOS on encode,
    which only helps a model whose training data had it."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    spm = read_spm_model(spm_model_path)
    backend = build_backend_tokenizer(spm)

    def piece(index: int | None) -> str | None:
        if index is None or index < 0:
            return None
        if index >= len(spm.pieces):
            raise UserError(f"token id {index} is outside the tokenizer's {len(spm.pieces)} pieces; check tokenizer_meta.json against {spm_model_path}.")
        return spm.pieces[index].piece

    bos, eos, pad = piece(bos_id), piece(eos_id), piece(pad_id)
    if add_bos and bos is not None:
        backend.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    specials = {name: value for name, value in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", spm.pieces[spm.unk_id].piece)) if value is not None}
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, add_bos_token=add_bos and bos is not None, **specials)
