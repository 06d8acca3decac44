//! The optimizer and learning-rate schedule of the reference (section 3.10): AdamW as in
//! `transformers` 4.5 (bias correction, `eps` added to `sqrt(v)`, decoupled weight decay applied
//! after the Adam update), weight decay only on the [`DECAY`] group, linear warm-up then linear
//! decay to 0, and global gradient-norm clipping.
//!
//! It is written here rather than taken from `tch::nn::Optimizer` because training must resume
//! from a checkpoint: the moment estimates are ordinary tensors that we save and load by
//! parameter name.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::layers::DECAY;

/// AdamW hyperparameters (reference defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Applied to the [`DECAY`] group only.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
        }
    }
}

/// Linear warm-up from 0 to the peak over the first `warmup` steps, then linear decay to 0 at
/// `total` (`transformers.get_linear_schedule_with_warmup`; step `k` is the `k`-th optimizer
/// step, counted from 0, so the very first update runs at rate 0 when there is a warm-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// Warm-up over `warmup_fraction` of `total` steps (truncated, as `int(0.1 * total)`).
    pub fn new(peak: f64, total: u64, warmup_fraction: f64) -> Self {
        Schedule {
            peak,
            warmup: (warmup_fraction * total as f64) as u64,
            total,
        }
    }

    /// The learning rate of step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let left = self.total.saturating_sub(step) as f64;
            left / self.total.saturating_sub(self.warmup).max(1) as f64
        };
        self.peak * factor
    }
}

/// One trainable parameter with its AdamW state.
struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over every trainable variable of a VarStore.
pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    steps: u64,
}

impl AdamW {
    /// Tracks every trainable variable of `vs` that requires a gradient (create the model and
    /// freeze what should stay fixed first). Parameters are kept in name order, so updates and
    /// saved state do not depend on hash-map order.
    pub fn new(vs: &VarStore, config: AdamWConfig) -> Result<Self> {
        let vars = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
        let mut params = Vec::new();
        for var in vars
            .trainable_variables
            .iter()
            .filter(|var| var.tensor.requires_grad())
        {
            // The saved state is keyed by name, so each parameter needs exactly one.
            let names: Vec<&String> = vars
                .named_variables
                .iter()
                .filter(|(_, t)| t.data_ptr() == var.tensor.data_ptr() && t.is_set_to(&var.tensor))
                .map(|(name, _)| name)
                .collect();
            let [name] = names.as_slice() else {
                return Err(Error::Config(format!(
                    "a trainable parameter of shape {:?} has {} names ({names:?}); the \
                     optimizer state needs exactly one",
                    var.tensor.size(),
                    names.len()
                )));
            };
            params.push(Param {
                name: name.to_string(),
                tensor: var.tensor.shallow_clone(),
                decay: var.group == DECAY,
                exp_avg: var.tensor.zeros_like(),
                exp_avg_sq: var.tensor.zeros_like(),
            });
        }
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(AdamW {
            params,
            config,
            steps: 0,
        })
    }

    /// Optimizer steps taken so far (restored by [`AdamW::load`]).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.tensor.grad())
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max_norm / (total + 1e-6);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
            total
        })
    }

    /// One update at learning rate `lr`. Parameters that never received a gradient are left
    /// untouched (as PyTorch does for `grad is None`).
    pub fn step(&mut self, lr: f64) {
        let c = self.config;
        self.steps += 1;
        let t = self.steps as f64;
        let bias1 = 1.0 - c.beta1.powf(t);
        let bias2 = 1.0 - c.beta2.powf(t);
        let step_size = lr * bias2.sqrt() / bias1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                // In place where libtorch allows: the step is memory-bound, so every pass over
                // the parameters counts.
                let _ = p.exp_avg.lerp_(&grad, 1.0 - c.beta1);
                // v = beta2 v + (1 - beta2) g² as one lerp.
                let _ = p.exp_avg_sq.lerp_(&grad.square(), 1.0 - c.beta2);
                // p += m / ((sqrt(v) + eps) / -step_size); nothing to add at rate 0.
                if step_size != 0.0 {
                    let mut denom = p.exp_avg_sq.sqrt();
                    let _ = denom.g_add_scalar_(c.eps);
                    let _ = denom.g_div_scalar_(-step_size);
                    let _ = p.tensor.addcdiv_(&p.exp_avg, &denom);
                }
                if p.decay && c.weight_decay > 0.0 {
                    let _ = p.tensor.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
            }
        });
    }

    /// Saves the moment estimates (`NAME.exp_avg`, `NAME.exp_avg_sq`) as safetensors; the step
    /// count goes with the trainer's state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, &Tensor)> = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            tensors.push((format!("{}.exp_avg", p.name), &p.exp_avg));
            tensors.push((format!("{}.exp_avg_sq", p.name), &p.exp_avg_sq));
        }
        Tensor::write_safetensors(&tensors, path).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Restores state saved by [`AdamW::save`] for the same model, and the step count.
    pub fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let err = |message: String| Error::Weights {
            path: path.to_path_buf(),
            message,
        };
        let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| err(e.to_string()))?
            .into_iter()
            .collect();
        tch::no_grad(|| {
            for p in &mut self.params {
                for (suffix, state) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let key = format!("{}.{suffix}", p.name);
                    let t = saved
                        .get(&key)
                        .ok_or_else(|| err(format!("missing optimizer state {key}")))?;
                    if t.size() != state.size() {
                        return Err(err(format!(
                            "{key}: shape {:?}, model has {:?}",
                            t.size(),
                            state.size()
                        )));
                    }
                    state.copy_(t);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Linear;
    use tch::{Device, Kind};

    #[test]
    fn schedule_warms_up_then_decays_linearly_to_zero() {
        let s = Schedule::new(5e-5, 100, 0.1);
        assert_eq!(s.warmup, 10);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 2.5e-5).abs() < 1e-12);
        assert!((s.lr(10) - 5e-5).abs() < 1e-12);
        assert!((s.lr(55) - 2.5e-5).abs() < 1e-12);
        assert!((s.lr(99) - 5e-5 / 90.0).abs() < 1e-12);
        assert_eq!(s.lr(100), 0.0);
        assert_eq!(s.lr(500), 0.0);
        // Rises strictly during warm-up, falls strictly after.
        assert!((1..10).all(|k| s.lr(k) > s.lr(k - 1)));
        assert!((11..=100).all(|k| s.lr(k) < s.lr(k - 1)));
    }

    #[test]
    fn schedule_truncates_warmup_and_handles_tiny_totals() {
        assert_eq!(Schedule::new(1.0, 60_160, 0.1).warmup, 6_016);
        assert_eq!(Schedule::new(1.0, 9, 0.1).warmup, 0);
        let s = Schedule::new(1.0, 9, 0.1);
        assert_eq!(s.lr(0), 1.0);
        let none = Schedule::new(1.0, 0, 0.1);
        assert_eq!(none.lr(0), 0.0);
    }

    /// One AdamW step on a known gradient matches the transformers formula computed by hand.
    #[test]
    fn adamw_step_matches_reference_formula_and_decays_only_its_group() {
        let vs = VarStore::new(Device::Cpu);
        let lin = Linear::new(vs.root().sub("lin"), 2, 1);
        tch::no_grad(|| {
            lin.weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
            lin.bias
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.5f32]));
        });
        let config = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(&vs, config).unwrap();
        opt.zero_grad();
        // loss = sum(w) * 3 + b * 2  =>  grad w = [3, 3], grad b = 2.
        let loss = lin.weight.sum(Kind::Float) * 3.0 + lin.bias.sum(Kind::Float) * 2.0;
        loss.backward();
        opt.step(0.1);
        // Step 1: m = 0.1 g, v = 0.001 g², step = lr sqrt(0.001) / 0.1, update = -step m/(sqrt(v)+eps)
        let update = |g: f64| {
            let m = 0.1 * g;
            let v = 0.001 * g * g;
            0.1 * 0.001f64.sqrt() / 0.1 * m / (v.sqrt() + 1e-6)
        };
        let w: Vec<f64> = Vec::try_from(lin.weight.view([-1]).to_kind(Kind::Double)).unwrap();
        let expect_w = |w0: f64| (w0 - update(3.0)) * (1.0 - 0.1 * 0.5);
        assert!((w[0] - expect_w(1.0)).abs() < 1e-5, "{w:?}");
        assert!((w[1] - expect_w(-2.0)).abs() < 1e-5, "{w:?}");
        let b = lin.bias.double_value(&[0]);
        assert!(
            (b - (0.5 - update(2.0))).abs() < 1e-5,
            "bias is not decayed: {b}"
        );
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn a_parameter_without_a_unique_name_is_an_error() {
        let vs = VarStore::new(Device::Cpu);
        let lin = Linear::new(vs.root().sub("lin"), 3, 2);
        // The same tensor under a second name: its saved state could not be told apart.
        let _tied = vs.root().add("tied", lin.weight.shallow_clone(), true);
        let e = AdamW::new(&vs, AdamWConfig::default()).err().unwrap();
        assert!(e.to_string().contains("has 2 names"), "{e}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let lin = Linear::new(vs.root().sub("lin"), 3, 4);
        let mut opt = AdamW::new(&vs, AdamWConfig::default()).unwrap();
        opt.zero_grad();
        (lin.weight.sum(Kind::Float) * 10.0 + lin.bias.sum(Kind::Float) * 10.0).backward();
        // 16 gradient entries of 10: norm 40.
        let before = opt.clip_grad_norm(1.0);
        assert!((before - 40.0).abs() < 1e-4);
        let after = opt.clip_grad_norm(1.0);
        assert!((after - 1.0).abs() < 1e-4, "{after}");
        // A small norm is left alone.
        assert!((opt.clip_grad_norm(5.0) - after).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let train = |lin: &Linear, opt: &mut AdamW, steps: usize| {
            for _ in 0..steps {
                opt.zero_grad();
                lin.forward(&Tensor::ones([2, 3], (Kind::Float, Device::Cpu)))
                    .pow_tensor_scalar(2)
                    .sum(Kind::Float)
                    .backward();
                opt.step(0.01);
            }
        };
        tch::manual_seed(0);
        let vs_a = VarStore::new(Device::Cpu);
        let lin_a = Linear::new(vs_a.root().sub("lin"), 3, 2);
        let mut opt_a = AdamW::new(&vs_a, AdamWConfig::default()).unwrap();
        train(&lin_a, &mut opt_a, 2);
        opt_a.save(&path).unwrap();
        // A copy of the model with restored optimizer state continues exactly like the original.
        let mut vs_b = VarStore::new(Device::Cpu);
        let lin_b = Linear::new(vs_b.root().sub("lin"), 3, 2);
        vs_b.copy(&vs_a).unwrap();
        let mut opt_b = AdamW::new(&vs_b, AdamWConfig::default()).unwrap();
        opt_b.load(&path, opt_a.steps()).unwrap();
        train(&lin_a, &mut opt_a, 3);
        train(&lin_b, &mut opt_b, 3);
        assert!(lin_a.weight.allclose(&lin_b.weight, 1e-7, 1e-9, false));
        assert_eq!(opt_b.steps(), 5);
        // State of another shape is rejected.
        let vs_c = VarStore::new(Device::Cpu);
        let _lin_c = Linear::new(vs_c.root().sub("lin"), 4, 2);
        assert!(AdamW::new(&vs_c, AdamWConfig::default())
            .unwrap()
            .load(&path, 0)
            .is_err());
    }
}
