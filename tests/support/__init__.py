"""What the tests share: polling with a deadline, the suite's fault counters, real test processes,
and the invariant every fault must keep."""
