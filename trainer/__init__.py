"""Plain-PyTorch Llama-3-style trainer with 4D parallelism.

Knows nothing of Ray, the catalog or the controller: it receives a small
context (rank, layout, folders, a beacon callback, a stop flag) and trains.
"""
