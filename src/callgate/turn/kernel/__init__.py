"""The kernel fast path for channel data (docs/relay-fast-path.md): the eBPF program's source
(relay_tc.bpf.c), its build and loader (loader.py) and the control plane that keeps its maps in
step with the allocations (fastpath.py)."""
