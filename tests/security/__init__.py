"""Attacks from the security review, replayed: each test says what was tried."""
