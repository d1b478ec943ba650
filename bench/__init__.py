"""kanal's benchmarks: each suite runs kanal and the peers a user would pick instead, in one run."""
