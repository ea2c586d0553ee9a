"""Long-running loops of the coordinator: timers, BMS command worker, outbox relay, reconciler."""
