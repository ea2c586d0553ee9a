"""Demand response: the saga that drives BMS commands for utility DR events."""
