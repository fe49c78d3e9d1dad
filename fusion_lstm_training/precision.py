"""Which precision pays on the machine at hand: bfloat16 autocast is faster than float32 on a GPU and on some CPUs,
and slower on others (docs/reproducing.md gives the measurements). `choose_precision("auto")` measures instead of
guessing from CPU flags."""

import logging
import os
import platform
import time
from pathlib import Path

import torch


logger = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")
# bf16 is chosen only when it is clearly faster: the ratio of its time to fp32's must stay below this
BF16_TIME_RATIO = 0.9


def bf16_time_ratio(device: str = "cpu", repeats: int = 5) -> float:
    """Time of bfloat16 autocast over float32 for the work that dominates training and the encoder: a linear
    layer of the paper's LSTM width (768 → 4·768 gates) and its backward on 2,048 rows. The best of `repeats`
    runs of each, interleaved."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(768, 3072).to(device)
    inputs = torch.randn(2048, 768, device=device, requires_grad=True)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(repeats):
        for name, enabled in (("fp32", False), ("bf16", True)):
            started = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=enabled):
                layer(inputs).float().sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - started)
    return best["bf16"] / best["fp32"]


def choose_precision(precision: str, cpuinfo: str | None = None) -> str:
    """fp32 or bf16: as asked, or for "auto" bf16 where a GPU is present or a measurement on this CPU finds it
    faster, fp32 elsewhere (at once on a CPU without native bfloat16; `cpuinfo`: /proc/cpuinfo's text, read when
    None). The choice and, for auto, its measurement are logged."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        logger.info("precision auto: bf16 (a GPU)")
        return "bf16"
    if cpu_has_native_bf16(cpuinfo) is False:  # emulated bfloat16 is many times slower: even its measurement took minutes
        logger.info("precision auto: fp32 (this CPU has no native bfloat16: neither AVX512-BF16 nor AMX)")
        return "fp32"
    logger.info("precision auto: timing bf16 autocast against fp32 on this CPU (seconds) …")
    ratio = bf16_time_ratio()
    chosen = "bf16" if ratio < BF16_TIME_RATIO else "fp32"
    logger.info("precision auto: %s (bf16 autocast takes %.2f× the time of fp32 on this CPU)", chosen, ratio)
    return chosen


def precision_arguments(precision: str) -> dict:
    """run_clm.py arguments for fp32 or bf16 (bf16 autocast on a CPU-only machine needs use_cpu)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: use fp32 or bf16 (choose_precision resolves auto).")
    bf16 = precision == "bf16"
    return {"bf16": bf16, **({"use_cpu": True} if bf16 and not torch.cuda.is_available() else {})}


# CPU flags of native bfloat16 arithmetic (Linux /proc/cpuinfo names)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# the vector flags a speed depends on, recorded beside every measurement
VECTOR_FLAGS = ("avx2", "avx512f", *NATIVE_BF16_FLAGS)
# environment variables that cap the instruction sets the math libraries use (an AVX2 machine emulated on a newer one)
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def read_cpuinfo(cpuinfo: str | None = None) -> str | None:
    """/proc/cpuinfo's text (or the text given); None where there is none (not Linux)."""
    if cpuinfo is not None:
        return cpuinfo
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    return {flag for line in (read_cpuinfo(cpuinfo) or "").splitlines() if line.startswith("flags")
            for flag in line.split(":", 1)[1].split()}


def isa_limits() -> dict[str, str]:
    """The instruction-set caps set in the environment (ISA_LIMITS), by variable."""
    return {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo's flags (or the text
    given), and oneDNN is not capped below them (ONEDNN_MAX_CPU_ISA=AVX2); None where the flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capped and "BF16" not in capped and "AMX" not in capped and "ALL" != capped:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS) if flags else None


def cpu_description(cpuinfo: str | None = None) -> dict:
    """What a measured time ran on: the CPU's model name, its vector flags (VECTOR_FLAGS) and the instruction-set caps
    of the environment (an emulated AVX2 machine says so)."""
    text = read_cpuinfo(cpuinfo) or ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = cpu_flags(text)
    return {"model": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "vector_flags": [flag for flag in VECTOR_FLAGS if flag in flags], "isa_limits": isa_limits()}


def cpu_text(cpu: dict) -> str:
    """A cpu_description in one line: model, cores, flags, caps."""
    caps = ", ".join(f"{k}={v}" for k, v in cpu.get("isa_limits", {}).items())
    return (f"{cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['vector_flags']) or 'no AVX2'}"
            f"{'; capped: ' + caps if caps else ''})")


def check_cpu_bf16(cpuinfo: str | None = None):
    """bf16 autocast on a CPU without native bfloat16 is refused: many times slower than fp32 there (docs/reproducing.md),
    and the LSTM of fusion none crashes inside oneDNN."""
    if cpu_has_native_bf16(cpuinfo) is False:
        raise ValueError("--bf16 on this CPU, which has no native bfloat16 (neither AVX512-BF16 nor AMX): bf16 autocast "
                         "is many times slower than fp32 here and the LSTM of fusion none crashes inside oneDNN. Train "
                         "with --bf16 false (reproduce.py: --precision fp32 or auto).")
