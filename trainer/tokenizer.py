"""Byte-level tokens: every byte is a token, plus one end-of-document token.

Kept free of torch so the job-file validator can import it cheaply.
"""

EOD_TOKEN = 256
"""Separates documents; attention never crosses it."""
BYTE_VOCAB_SIZE = 257
"""Smallest vocabulary that holds every byte and the end-of-document token."""


def encode(text: bytes) -> list[int]:
    return list(text)


def decode(tokens: list[int]) -> bytes:
    return bytes(t for t in tokens if t < 256)
