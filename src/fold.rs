//! Batch norm for training only: after training it is folded into the convolution before it,
//! so the weights file and the served network are the plain convolutions, at the same cost.

use candle_core::Result;
use candle_nn::VarMap;

/// Names under which each convolution's batch norm is declared: `bn1` follows `conv1`.
pub const PAIRS: [(&str, &str); 3] = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")];

/// Rewrites each convolution as itself followed by its batch norm in eval mode, then drops the
/// batch norm's tensors: `w' = w·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`, per output channel.
/// Does nothing for a varmap without batch norms.
pub fn fold(varmap: &VarMap, eps: f64) -> Result<()> {
    let mut data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    for (conv, bn) in PAIRS {
        let get = |name: &str| {
            data.get(name)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| candle_core::Error::Msg(format!("fold: no tensor `{name}`")))
        };
        if !data.contains_key(&format!("{bn}.weight")) {
            continue;
        }
        let gamma = get(&format!("{bn}.weight"))?;
        let beta = get(&format!("{bn}.bias"))?;
        let mean = get(&format!("{bn}.running_mean"))?;
        let var = get(&format!("{bn}.running_var"))?;
        let scale = (gamma / (var + eps)?.sqrt()?)?;
        let weight = get(&format!("{conv}.weight"))?;
        let bias = get(&format!("{conv}.bias"))?;
        let folded_w = weight.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let folded_b = ((bias - mean)? * &scale)?.add(&beta)?;
        data[&format!("{conv}.weight")].set(&folded_w)?;
        data[&format!("{conv}.bias")].set(&folded_b)?;
        for part in ["weight", "bias", "running_mean", "running_var"] {
            data.remove(&format!("{bn}.{part}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, Net, NORM_EPS};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{ModuleT, VarBuilder};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A network with batch norms whose statistics and affine parts are far from the identity.
    fn trained_looking(varmap: &VarMap) -> Net {
        let net = Net::with_batch_norm(VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu))
            .unwrap();
        model::init_deterministic(varmap, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter().filter(|(n, _)| n.starts_with("bn")) {
            let range = if name.ends_with("running_var") || name.ends_with("weight") {
                0.2..3.0
            } else {
                -1.0..1.0
            };
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.gen_range(range.clone()))
                .collect();
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        net
    }

    #[test]
    fn a_folded_network_answers_as_the_network_with_batch_norm() {
        let varmap = VarMap::new();
        let with_norm = trained_looking(&varmap);
        let xs = Tensor::randn(0f32, 1., (5, 1, 28, 28), &Device::Cpu).unwrap();
        let want = with_norm.forward_t(&xs, false).unwrap();
        fold(&varmap, NORM_EPS).unwrap();
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        assert!(names.iter().all(|n| !n.starts_with("bn")), "{names:?}");
        let mut folded =
            Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let got = folded.forward_t(&xs, false).unwrap();
        let diff = crate::conv::tests::max_diff(&got, &want);
        assert!(diff < 1e-4, "max difference {diff}");
        // And through the fused layers a loaded network runs.
        folded.freeze().unwrap();
        let diff = crate::conv::tests::max_diff(&folded.forward_t(&xs, false).unwrap(), &want);
        assert!(diff < 1e-4, "max difference after freeze {diff}");
    }

    #[test]
    fn batch_norm_leaves_the_other_tensors_initial_draws_alone() {
        let plain = VarMap::new();
        Net::new(VarBuilder::from_varmap(&plain, DType::F32, &Device::Cpu)).unwrap();
        model::init_deterministic(&plain, 3).unwrap();
        let normed = VarMap::new();
        Net::with_batch_norm(VarBuilder::from_varmap(&normed, DType::F32, &Device::Cpu)).unwrap();
        model::init_deterministic(&normed, 3).unwrap();
        let (plain, normed) = (plain.data().lock().unwrap(), normed.data().lock().unwrap());
        for (name, var) in plain.iter() {
            let diff = crate::conv::tests::max_diff(var.as_tensor(), normed[name].as_tensor());
            assert_eq!(diff, 0.0, "{name}");
        }
        let gamma: Vec<f32> = normed["bn1.weight"].as_tensor().to_vec1().unwrap();
        assert!(gamma.iter().all(|&g| g == 1.0));
    }
}
