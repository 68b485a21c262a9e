//! CPU f32 primitives of the fused layers: contiguous access to a tensor's storage, the matrix
//! product (the gemm crate, which candle's own CPU matmul runs on) and bias plus ReLU in place.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// The f32 values of a contiguous layout; another dtype or a strided layout is an error
/// naming `op`.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(d) => d,
        other => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `dst (m, n) = lhs (m, k) · rhs (k, n)`, all row-major, with the gemm crate candle's own
/// CPU matmul runs on, threaded as candle is.
pub(crate) fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    (m, k, n): (usize, usize, usize),
) -> Result<()> {
    if dst.len() != m * n || lhs.len() != m * k || rhs.len() != k * n {
        candle_core::bail!("matmul: operands do not match ({m}×{k})·({k}×{n})");
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the check above keeps every access of the given shapes and unit column strides
    // inside the three slices; `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// `v = max(v + bias[col], 0)` over a row-major `(rows, bias.len())` matrix.
pub(crate) fn add_bias_relu(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = (*v + b).max(0.0);
        }
    }
}
