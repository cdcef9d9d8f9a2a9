"""The bpfoom.fleet lab: kernels with the BPF OOM hook, booted under qemu as real hosts."""
