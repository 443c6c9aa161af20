#!/usr/bin/env python3
"""`make resources`: per kernel and architecture, the registers, spills, local memory (stack
frame) and static shared memory that ptxas reports (`nvcc --resource-usage`), and the theoretical
occupancy at the kernel's block size.

Reads ptxas's report on stdin. The block size of a kernel is its `__launch_bounds__(EXPR)` in kernels/*.cuh, EXPR evaluated
with the header's constexpr constants and the kernel's template arguments (read off the
demangled name); kernels without one are shown at 256 threads, marked '*'.
Dynamic shared memory is chosen at launch and is not included.

With `--sass ARCH=FILE` (cuobjdump -sass of that architecture's cubin), a column counts each
kernel's tensor-core instructions in its SASS (HMMA: mma.sync / WMMA; HGMMA: sm_90 wgmma).
"""
import argparse
import glob
import re
import subprocess
import sys

# Per-SM limits: max warps, max blocks, registers, shared memory usable by blocks (bytes).
LIMITS = {"sm_80": (64, 32, 65536, 167936), "sm_90": (64, 32, 65536, 233472)}


def constants(src):
    """`constexpr int NAME = 123;` of the kernel headers: names a launch bound may use."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"constexpr\s+(?:int|unsigned|size_t)\s+(\w+)\s*=\s*(\d+)", src)}


def launch_bounds():
    """kernel name -> (template parameter names, block-size expression) from
    `[template <...>] __global__ void __launch_bounds__(EXPR) name(`."""
    bounds, consts = {}, {}
    for path in glob.glob("kernels/*.cuh") + glob.glob("bench/*.cu"):
        src = open(path).read()
        consts.update(constants(src))
        for m in re.finditer(r"__launch_bounds__\(", src):
            depth, i = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            expr = src[m.end():i - 1]
            name = re.match(r"\s*(\w+)\s*\(", src[i:])
            if not name:
                continue
            head = src[max(src.rfind(";", 0, m.start()), src.rfind("}", 0, m.start())) + 1:m.start()]
            t = re.search(r"template\s*<([^>]*)>", head)
            params = [p.split()[-1] for p in t.group(1).split(",")] if t else []
            bounds[name.group(1)] = (params, expr)
    return bounds, consts


def block_size(bounds, consts, base, pretty):
    """Evaluates the kernel's launch bound with its template arguments (from the demangled
    name); 0 when it has none or it cannot be evaluated."""
    if base not in bounds:
        return 0
    params, expr = bounds[base]
    args = re.search(re.escape(base) + r"<([^>]*)>", pretty)
    env = dict(consts)
    if params and args:
        for p, a in zip(params, args.group(1).split(",")):
            a = a.strip()
            v = {"true": "1", "false": "0"}.get(a, a)
            if re.fullmatch(r"-?\d+", v):  # value parameters only; type parameters are skipped
                env[p] = int(v)
    try:
        return int(eval(expr, {"__builtins__": {}}, env))
    except (NameError, SyntaxError, ValueError, TypeError, ZeroDivisionError):
        return 0


def occupancy(arch, threads, regs, smem):
    max_warps, max_blocks, reg_file, smem_sm = LIMITS[arch]
    warps = (threads + 31) // 32
    regs_per_warp = ((max(regs, 1) * 32 + 255) // 256) * 256
    by_regs = (reg_file // regs_per_warp) // warps
    by_smem = smem_sm // (smem + 1024) if smem > 0 else max_blocks
    blocks = min(max_blocks, max_warps // warps, by_regs, by_smem)
    return 100.0 * blocks * warps / max_warps


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        return dict(zip(names, out))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def tensor_ops(paths):
    """(arch, mangled kernel name) -> number of HMMA/HGMMA instructions, from cuobjdump -sass."""
    counts = {}
    for spec in paths:
        arch, path = spec.split("=", 1)
        cur = None
        for line in open(path):
            m = re.search(r"Function : (\S+)", line)
            if m:
                cur = (arch, m.group(1))
                counts[cur] = 0
            elif cur and re.search(r"\b(HMMA|HGMMA)\.", line):
                counts[cur] += 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sass", action="append", default=[], metavar="ARCH=FILE")
    args = ap.parse_args()
    tc = tensor_ops(args.sass)
    text = sys.stdin.read()
    rows, cur = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line)
        if m:
            cur = {"name": m.group(1), "arch": m.group(2), "regs": 0, "smem": 0, "stack": 0,
                   "spill_st": 0, "spill_ld": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    if not rows:
        sys.exit("resources: no kernels in ptxas output (did the compile fail?)")
    names = demangle(sorted({r["name"] for r in rows}))
    bounds, consts = launch_bounds()
    bad = 0
    print("%-6s %-60s %5s %7s %6s %7s %6s %6s%s" % ("arch", "kernel", "regs", "spill B", "stack", "smem B",
                                                   "block", "occ %", "   HMMA" if tc else ""))
    for r in sorted(rows, key=lambda r: (r["arch"], names[r["name"]])):
        pretty = names[r["name"]]
        short = re.sub(r"^(?:void )?vit::(?:\(anonymous namespace\)::)?", "", pretty)
        base = re.match(r"[\w:]*?(\w+)(?:<|\()", short)
        threads = block_size(bounds, consts, base.group(1) if base else "", short)
        mark = ""
        if not threads:
            threads, mark = 256, "*"
        occ = occupancy(r["arch"], threads, r["regs"], r["smem"])
        spill = r["spill_st"] + r["spill_ld"]
        bad += spill > 0 or r["stack"] > 0
        if len(short) > 60:
            short = short[:57] + "..."
        hm = ""
        if tc:
            n = tc.get((r["arch"], r["name"]))
            hm = "%7s" % ("?" if n is None else n)
        print("%-6s %-60s %5d %7d %6d %7d %5d%1s %6.0f%s" % (r["arch"], short, r["regs"], spill,
                                                             r["stack"], r["smem"], threads, mark, occ, hm))
    print("\n%d kernel builds; %s" % (len(rows), "no spills and no local memory in any kernel"
                                       if bad == 0 else "%d with spills or local memory (stack)" % bad))
    if tc:
        with_tc = sorted({names[r["name"]] for r in rows if tc.get((r["arch"], r["name"]), 0) > 0})
        print("kernels with tensor-core instructions (HMMA/HGMMA) in their SASS: %d" % len(with_tc))
    print("Dynamic shared memory is not in 'smem B' nor in 'occ %' (set at launch; see the kernels).")


if __name__ == "__main__":
    main()
