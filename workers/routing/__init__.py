"""Which version answers a request: the served models and the traffic policies over them."""
