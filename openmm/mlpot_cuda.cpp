// CUDA kernel: written below
