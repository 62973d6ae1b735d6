"""Benchmarks: each module runs alone and prints ``name: ours X/s, peer Y/s, ratio R`` last."""
