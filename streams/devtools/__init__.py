"""For development and demos: the local broker, simulated traffic, benchmarks."""
