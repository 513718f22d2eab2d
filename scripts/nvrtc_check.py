#!/usr/bin/env python3
"""Compile every kernels/cuda/*.cu to PTX with NVRTC (ctypes over libnvrtc, no GPU needed),
assemble each PTX with `ptxas -v` for its real architecture, print registers / stack /
spills per kernel, and fail on a compile error, an assembler error or an unexpected spill.

Called by scripts/check-cuda.sh, which installs the pinned NVRTC / ptxas wheels and passes
their paths. Options match the run-time compile of kernels/src/cuda/compile.rs
(NVRTC_OPTIONS there): keep the two lists in sync.

A source that needs an architecture-specific target says so in a line `// arch: sm_90a`;
every source is built for sm_80 and sm_90.
"""

import argparse
import ctypes
import os
import re
import subprocess
import sys
import tempfile

# Same options as kernels/src/cuda/compile.rs (plus the architecture).
NVRTC_OPTIONS = ["--std=c++17", "--fmad=true", "-lineinfo"]
BASE_ARCHS = ["sm_80", "sm_90"]
# Kernels allowed to spill (name -> bytes of spill stores allowed). Empty: no spill expected.
ALLOWED_SPILLS = {}


def load_nvrtc(lib_dir):
    for name in ("libnvrtc.so.13", "libnvrtc.so"):
        path = os.path.join(lib_dir, name)
        if os.path.exists(path):
            return ctypes.CDLL(path)
    sys.exit(f"check-cuda: no libnvrtc.so.13 in {lib_dir}")


def nvrtc_compile(nvrtc, source, name, headers, options):
    """Returns (ok, ptx_or_log)."""
    prog = ctypes.c_void_p()
    hdr_src = (ctypes.c_char_p * len(headers))(*[s.encode() for s in headers.values()])
    hdr_names = (ctypes.c_char_p * len(headers))(*[n.encode() for n in headers.keys()])
    rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(),
                                  len(headers), hdr_src, hdr_names)
    if rc != 0:
        return False, f"nvrtcCreateProgram failed with {rc}"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = nvrtc.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
        return False, log.value.decode(errors="replace")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    text = log.value.decode(errors="replace").strip()
    if text:
        print(f"  nvrtc log for {name}:\n{text}")
    return True, ptx.value.decode()


def parse_ptxas(report):
    """Per kernel: registers, stack frame, spill stores, spill loads, shared memory."""
    kernels = {}
    current = None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            kernels[current] = {"regs": 0, "stack": 0, "spill_st": 0, "spill_ld": 0, "smem": 0}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            k = kernels[current]
            k["stack"], k["spill_st"], k["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            kernels[current]["regs"] = int(m.group(1))
            m2 = re.search(r"(\d+) bytes smem", line)
            if m2:
                kernels[current]["smem"] = int(m2.group(1))
    return kernels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, help="folder holding libnvrtc.so.13")
    ap.add_argument("--ptxas", required=True, help="path of ptxas")
    ap.add_argument("--src", required=True, help="kernels/cuda")
    ap.add_argument("--out", help="folder to keep the PTX in (default: a temporary one)")
    args = ap.parse_args()

    nvrtc = load_nvrtc(args.lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"check-cuda: NVRTC {major.value}.{minor.value}, {args.ptxas}")

    sources = sorted(f for f in os.listdir(args.src) if f.endswith(".cu"))
    headers = {f: open(os.path.join(args.src, f)).read()
               for f in sorted(os.listdir(args.src)) if f.endswith(".cuh")}
    if not sources:
        sys.exit(f"check-cuda: no .cu files in {args.src}")
    out_dir = args.out or tempfile.mkdtemp(prefix="bitnet-ptx-")
    os.makedirs(out_dir, exist_ok=True)
    failures = []
    rows = []
    for src in sources:
        text = open(os.path.join(args.src, src)).read()
        archs = list(BASE_ARCHS)
        archs += [a for a in re.findall(r"^// arch: (sm_\w+)\s*$", text, re.M) if a not in archs]
        for arch in archs:
            compute = arch.replace("sm_", "compute_")
            ok, result = nvrtc_compile(nvrtc, text, src, headers,
                                       NVRTC_OPTIONS + [f"--gpu-architecture={compute}"])
            if not ok:
                failures.append(f"{src} ({arch}): NVRTC error\n{result}")
                continue
            ptx_path = os.path.join(out_dir, f"{src[:-3]}.{arch}.ptx")
            with open(ptx_path, "w") as f:
                f.write(result)
            proc = subprocess.run([args.ptxas, "-v", f"--gpu-name={arch}", ptx_path,
                                   "-o", os.devnull], capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{src} ({arch}): ptxas error\n{proc.stderr}")
                continue
            kernels = parse_ptxas(proc.stderr)
            if not kernels:
                failures.append(f"{src} ({arch}): ptxas reported no kernel")
            for name, k in sorted(kernels.items()):
                rows.append((src, arch, name, k))
                allowed = ALLOWED_SPILLS.get(name, 0)
                if k["spill_st"] > allowed or k["spill_ld"] > allowed:
                    failures.append(f"{src} ({arch}): {name} spills {k['spill_st']} bytes "
                                    f"(stores) / {k['spill_ld']} (loads), allowed {allowed}")

    print(f"{'source':<16} {'arch':<7} {'kernel':<22} {'regs':>5} {'stack':>6} "
          f"{'spill st':>9} {'spill ld':>9} {'smem':>6}")
    for src, arch, name, k in rows:
        print(f"{src:<16} {arch:<7} {name:<22} {k['regs']:>5} {k['stack']:>6} "
              f"{k['spill_st']:>9} {k['spill_ld']:>9} {k['smem']:>6}")
    print(f"check-cuda: {len(sources)} sources, {len(rows)} kernel builds, PTX in {out_dir}", flush=True)
    if failures:
        for f in failures:
            print(f"check-cuda: FAIL {f}")
        sys.exit(1)


if __name__ == "__main__":
    main()
