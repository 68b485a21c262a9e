//! An exponential moving average of the weights, the model that training evaluates and keeps
//! when it is on: it smooths out the last steps' noise at no cost to serving.

use candle_core::{Result, Tensor, Var};

/// The averaged copy of every variable, updated after each optimiser step.
pub struct Ema {
    decay: f64,
    steps: usize,
    shadow: Vec<(Var, Tensor)>,
}

impl Ema {
    /// Starts the average at the variables' current values.
    pub fn new(vars: Vec<Var>, decay: f64) -> Result<Self> {
        let shadow = vars
            .into_iter()
            .map(|v| {
                let copy = v.as_tensor().copy()?;
                Ok((v, copy))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            decay,
            steps: 0,
            shadow,
        })
    }

    /// Folds the variables' current values into the average. The decay ramps up over the
    /// first steps, so the random initial weights are forgotten quickly.
    pub fn update(&mut self) -> Result<()> {
        self.steps += 1;
        let d = self
            .decay
            .min((1 + self.steps) as f64 / (10 + self.steps) as f64);
        for (var, avg) in &mut self.shadow {
            *avg = ((&*avg * d)? + (var.as_tensor() * (1.0 - d))?)?;
        }
        Ok(())
    }

    /// Exchanges the variables' values with the average: call once to evaluate or keep the
    /// averaged model, again to resume training.
    pub fn swap(&mut self) -> Result<()> {
        for (var, avg) in &mut self.shadow {
            let live = var.as_tensor().copy()?;
            var.set(avg)?;
            *avg = live;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn the_average_lags_behind_and_swapping_twice_restores_the_weights() {
        let var = Var::from_vec(vec![0f32, 0.0], 2, &Device::Cpu).unwrap();
        let mut ema = Ema::new(vec![var.clone()], 0.5).unwrap();
        var.set(&Tensor::new(&[4f32, 8.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update().unwrap();
        // Step 1: decay min(0.5, 2/11) = 2/11.
        ema.swap().unwrap();
        let d = 2.0 / 11.0;
        let avg = values(&var);
        assert!((avg[0] - 4.0 * (1.0 - d) as f32).abs() < 1e-6, "{avg:?}");
        assert!((avg[1] - 8.0 * (1.0 - d) as f32).abs() < 1e-6, "{avg:?}");
        ema.swap().unwrap();
        assert_eq!(values(&var), [4.0, 8.0]);
    }
}
