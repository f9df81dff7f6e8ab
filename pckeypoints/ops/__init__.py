"""Point operations and their kernels: k-NN, PyG's ragged point ops, grid searches, Chamfer distances, the fused
sampler (:mod:`pckeypoints.ops.fused`) and the ahead-of-time build of the C++ extensions
(:mod:`pckeypoints.ops.extensions`)."""
