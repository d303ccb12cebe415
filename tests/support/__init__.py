"""Helpers shared by the tests: test models, topic factories, record collectors."""
