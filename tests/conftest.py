import os

# Triton's interpreter must be chosen before triton is imported: it runs the shipped kernels on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")
