"""The tesaiot benchmark harness (run it with bench/run; see docs/benchmarks.md)."""
