"""The pure core of the DR coordinator: saga, reduction planner, baselines. No I/O, no clock."""
