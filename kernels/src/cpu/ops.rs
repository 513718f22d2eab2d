//! Row-wise and element-wise ops of the CPU backend (norms, quantization, RoPE, attention,
//! gating), per [`super::CpuPath`]. Today they are the scalar reference.
