"""Ray actor shells around the services: the consuming pipeline members, the monitor, alerting and the experiment controller."""
