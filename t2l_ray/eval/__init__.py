"""`t2l-ray eval`: score the base model and adapter sets on SNI-style tasks and benchmarks, on Ray workers."""
