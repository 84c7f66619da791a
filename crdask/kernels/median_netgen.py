"""Generator of :mod:`crdask.kernels.median_nets` (straight-line median networks).

The full ``size x size`` median filters for ``size`` 5 and 7 first sort every
``size``-value column of the window band once per output row (shared by the
``size`` windows that contain the column), then apply, per output pixel, a
comparator network over the ``size * size`` column-sorted values. That
network is built here and pruned exactly with the 0-1 principle:

1. sort each rank (row of the sorted columns) across the columns, then
   discard the values that are provably below or above the median (after
   sorting columns and rows, the value at rank ``r`` of column ``c`` is >=
   ``(r + 1)(c + 1)`` values and <= ``(size - r)(size - c)`` values) and
   select the adjusted rank among the remaining candidates with a pruned
   Batcher network;
2. drop every comparator that never swaps on any 0/1 input with sorted
   columns (``(size + 1) ** size`` inputs, simulated bit-packed): a threshold
   of a real input with sorted columns is such a 0/1 input, so the dropped
   comparator never swaps real values either (Knuth, TAOCP 5.3.4);
3. drop comparators that cannot reach the output wire.

The result is checked on all those 0/1 inputs, which proves it selects the
median of every real input with sorted columns. Numba cannot cache exec'd
functions, so the code is written out as a module and committed;
``tests/test_kernels.py`` checks that the committed module equals
:func:`module_source`.

Example
-------
``python -m crdask.kernels.median_netgen > crdask/kernels/median_nets.py``
"""

import itertools

import numpy as np

from .median import batcher_pairs, selection_pairs

SIZES = (5, 7)


def _inputs01(s):
    """Bit-packed wires (wire ``c * s + r`` = rank r of column c) for every
    0/1 window with sorted columns, and the packed expected medians."""
    ks = np.array(list(itertools.product(range(s + 1), repeat=s)), dtype=np.int64)
    wires = [np.packbits(ks[:, c] >= s - r) for c in range(s) for r in range(s)]
    want = np.packbits(ks.sum(1) >= (s * s + 1) // 2)
    return wires, want


def _simulate(wires, net):
    w = list(wires)
    never = []
    for a, b in net:
        x, y = w[a], w[b]
        never.append(not np.any(x & ~y))  # x <= y on every input: no swap
        w[a], w[b] = x & y, x | y
    return w, never


def _backward(net, out):
    need, kept = {out}, []
    for a, b in reversed(net):
        if a in need or b in need:
            kept.append((a, b))
            need.update((a, b))
    return kept[::-1]


def window_network(s):
    """``(pairs, out)``: compare-exchanges ``(a, b)`` (min to ``a``) over the
    ``s * s`` wires ``c * s + r`` of a window whose columns are sorted, after
    which wire ``out`` holds the median."""
    n = s * s
    med = (n - 1) // 2
    net = [(c1 * s + r, c2 * s + r) for r in range(s) for c1, c2 in batcher_pairs(s)]
    cand = sorted(c * s + r for c in range(s) for r in range(s)
                  if (r + 1) * (c + 1) <= med + 1 and (s - r) * (s - c) <= med + 1)
    low = sum(1 for c in range(s) for r in range(s) if (s - r) * (s - c) > med + 1)
    k = med - low
    net += [(cand[i], cand[j]) for i, j in selection_pairs(len(cand), k)]
    out = cand[k]
    wires, want = _inputs01(s)
    while True:
        w, never = _simulate(wires, net)
        if not np.array_equal(w[out], want):
            raise AssertionError(f"median network for {s}x{s} is wrong")
        pruned = _backward([p for p, nv in zip(net, never) if not nv], out)
        if len(pruned) == len(net):
            return net, out
        net = pruned


def _ce_lines(pairs, name, indent):
    return [f"{indent}{name}{a}, {name}{b} = min({name}{a}, {name}{b}), "
            f"max({name}{a}, {name}{b})" for a, b in pairs]


STRIDE = 272  # float32 per row of the 7x7 sorted-column buffer: 266 windows + halo


def _row_layout(s, pairs, out, col):
    # 5x5: the sorted columns of a whole row band in an (s, nx) array.
    h = s // 2
    lines = ["", "@njit(cache=True, nogil=True)",
             f"def sort_columns{s}(d, s, j):",
             f'    """Sort the {s} values of each column of ``d[j - {h}:j + {h + 1}]`` '
             f'into ``s[:, i]`` ({len(col)} compare-exchanges)."""',
             "    nx = d.shape[1]"]
    lines += [f"    d{r} = d[j{r - h:+d}]" if r != h else f"    d{r} = d[j]" for r in range(s)]
    lines += [f"    s{r} = s[{r}]" for r in range(s)]
    lines += ["    for i in range(nx):"]
    lines += [f"        v{r} = d{r}[i]" for r in range(s)]
    lines += _ce_lines(col, "v", "        ")
    lines += [f"        s{r}[i] = v{r}" for r in range(s)]
    lines += ["", "", "@njit(cache=True, nogil=True)",
              f"def window_median{s}(s, o, nx):",
              f'    """``o[i]`` = median of the {s}x{s} window of sorted columns '
              f'``s[:, i - {h}:i + {h + 1}]`` ({len(pairs)} compare-exchanges)."""']
    lines += [f"    s{r} = s[{r}]" for r in range(s)]
    lines += [f"    for i in range({h}, nx - {h}):"]
    lines += [f"        w{c * s + r} = s{r}[i{c - h:+d}]" if c != h else f"        w{c * s + r} = s{r}[i]"
              for c in range(s) for r in range(s)]
    lines += _ce_lines(pairs, "w", "        ")
    lines += [f"        o[i] = w{out}", ""]
    return lines


def _strided_layout(s, pairs, out, col):
    # 7x7: LLVM does not vectorise the window loop over the (s, nx) layout;
    # it does with a 1-D buffer of constant row stride (blocks of columns).
    h = s // 2
    lines = ["", "@njit(cache=True, nogil=True)",
             f"def sort_columns{s}(d, j, c0, m, a):",
             f'    """Sort the {s} values of columns ``c0 .. c0 + m - 1`` of '
             f'``d[j - {h}:j + {h + 1}]`` into ``a[r * STRIDE + t]`` '
             f'({len(col)} compare-exchanges)."""']
    lines += [f"    d{r} = d[j{r - h:+d}]" if r != h else f"    d{r} = d[j]" for r in range(s)]
    lines += ["    for t in range(m):"]
    lines += [f"        v{r} = d{r}[c0 + t]" for r in range(s)]
    lines += _ce_lines(col, "v", "        ")
    lines += [f"        a[{r * STRIDE} + t] = v{r}" if r else "        a[t] = v0" for r in range(s)]
    lines += ["", "", "@njit(cache=True, nogil=True)",
              f"def window_median{s}(a, o, i0, w):",
              f'    """``o[i0 + t]`` = median of the {s}x{s} window of sorted columns '
              f'``t .. t + {2 * h}`` of ``a`` ({len(pairs)} compare-exchanges)."""',
              "    for t in range(w):"]
    lines += [f"        w{c * s + r} = a[{r * STRIDE + c} + t]" if r or c else "        w0 = a[t]"
              for c in range(s) for r in range(s)]
    lines += _ce_lines(pairs, "w", "        ")
    lines += [f"        o[i0 + t] = w{out}", ""]
    return lines


def module_source():
    """The text of :mod:`crdask.kernels.median_nets`."""
    lines = ['"""Generated by crdask/kernels/median_netgen.py: do not edit.',
             "",
             "Per output row j of a full 5x5 or 7x7 median filter: ``sort_columnsS``",
             "sorts the S values of each column of ``d[j - h:j + h + 1]`` (h = S // 2),",
             "``window_medianS`` takes the median of each S x S window of those sorted",
             "columns. Straight-line min/max networks over locals so that LLVM",
             "vectorises the loops over columns; the 7x7 kernels work on blocks of",
             "columns in a 1-D buffer of constant row stride ``STRIDE``.",
             '"""',
             "",
             "from numba import njit",
             "",
             f"STRIDE = {STRIDE}",
             ""]
    for s in SIZES:
        pairs, out = window_network(s)
        col = [tuple(p) for p in batcher_pairs(s)]
        lines += (_row_layout if s == 5 else _strided_layout)(s, pairs, out, col)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(module_source(), end="")
