"""Autoscaling of the consumer actors on the consumer group's lag.

``settings`` (what to scale on and within which bounds), ``lag`` (the group's lag read from the
broker), ``policy`` (a pure decision with hysteresis and cool-downs, on a ``Clock``) and
``autoscaler`` (the driver's loop that reads, decides and adds or drains consumers).
"""
