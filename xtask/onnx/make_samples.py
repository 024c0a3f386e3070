#!/usr/bin/env python3
"""Calibration and held-out input sets for the two real models of tests/golden/onnx, written as
safetensors files in the format `ttconv compress --calibrate / --holdout` reads (per graph
input, one tensor with a leading sample axis).

- basic-pitch (audio to notes, 22.05 kHz, input [1, 43844, 1]): synthetic music, 1 to 4
  simultaneous notes (MIDI 40..84) with 6 harmonics each, attack/decay envelopes and random onsets,
  over a little noise.
- silero-vad (voice activity, 16 kHz, input [T, 576] = 512-sample chunks with 64 samples of
  context, and LSTM states h, c [1, 1, 128]): sentences spoken by espeak-ng (Debian package
  `espeak-ng`), resampled to 16 kHz, placed at a random offset in 2 s of low noise.

Needs numpy (and espeak-ng for silero-vad). Usage:
    python3 xtask/onnx/make_samples.py OUT_DIR [--count 16] [--seed 0]
writes OUT_DIR/{basic_pitch,silero_vad}_{calibration,holdout}.safetensors.
"""
import argparse
import json
import os
import struct
import subprocess
import tempfile

import numpy as np

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things",
    "a voice activity detector tells speech from silence",
    "tensor trains compress convolution kernels",
    "it was a bright cold day in april",
    "we measured the output error on held out inputs",
    "seven silver swans swam silently seaward",
    "the rain in spain stays mainly in the plain",
    "can you hear me now",
    "one two three four five six seven eight nine ten",
    "good morning and welcome to the show",
    "numbers do not lie but they can be misread",
]


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def music(rng, n=43844, sr=22050):
    t = np.arange(n) / sr
    x = 0.003 * rng.standard_normal(n)
    for _ in range(rng.integers(1, 5)):
        midi = rng.integers(40, 85)
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        onset = rng.uniform(0, 1.2)
        length = rng.uniform(0.3, 1.5)
        env = np.clip((t - onset) / 0.01, 0, 1) * np.exp(-np.clip(t - onset, 0, None) / length)
        env[t < onset] = 0
        for k in range(1, 7):
            if f0 * k < sr / 2:
                x += env * 0.15 / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28))
    return x.astype(np.float32)


def speech(rng, text, n=32000, sr=16000):
    with tempfile.TemporaryDirectory() as d:
        wav = os.path.join(d, "s.wav")
        subprocess.run(["espeak-ng", "-s", str(int(rng.integers(130, 190))), "-p",
                        str(int(rng.integers(30, 70))), "-w", wav, text], check=True)
        raw = open(wav, "rb").read()
    # espeak-ng writes 16-bit mono PCM at 22050 Hz after a 44-byte header.
    src_sr = struct.unpack("<I", raw[24:28])[0]
    pcm = np.frombuffer(raw[44:], dtype="<i2").astype(np.float32) / 32768
    resampled = np.interp(np.arange(0, len(pcm) * sr / src_sr) * src_sr / sr, np.arange(len(pcm)), pcm)
    out = 0.002 * rng.standard_normal(n).astype(np.float32)
    seg = resampled[: n - 1000]
    start = int(rng.integers(0, n - len(seg)))
    out[start:start + len(seg)] += 0.5 * seg / max(1e-6, np.abs(seg).max())
    return out


def chunks(audio, size=512, context=64):
    padded = np.concatenate([np.zeros(context, np.float32), audio])
    t = len(audio) // size
    return np.stack([padded[i * size: i * size + size + context] for i in range(t)])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for part, seed in (("calibration", a.seed), ("holdout", a.seed + 1000)):
        rng = np.random.default_rng(seed)
        bp = np.stack([music(rng)[None, :, None] for _ in range(a.count)])
        write_safetensors(os.path.join(a.out, f"basic_pitch_{part}.safetensors"),
                          {"serving_default_input_2:0": bp})
        texts = SENTENCES[:6] if part == "calibration" else SENTENCES[6:]
        sv = np.stack([chunks(speech(rng, texts[i % len(texts)])) for i in range(a.count)])
        zeros = np.zeros((a.count, 1, 1, 128), np.float32)
        write_safetensors(os.path.join(a.out, f"silero_vad_{part}.safetensors"),
                          {"input": sv, "h": zeros, "c": zeros})
        print(part, "basic-pitch", bp.shape, "silero-vad", sv.shape)


if __name__ == "__main__":
    main()
