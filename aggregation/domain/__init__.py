"""Pure rollup logic: no I/O, no clocks. Time comes in as integer nanoseconds."""
