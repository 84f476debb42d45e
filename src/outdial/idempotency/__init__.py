"""`Idempotency-Key`: a retried creating POST replays the first answer and creates nothing
(`dependency.py`); the answers kept (`models.py`)."""
