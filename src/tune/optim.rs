//! AdamW over the adapter's matrices. Our own (a few lines) rather than candle-nn's, because a
//! resumable checkpoint needs the moment estimates, which candle-nn keeps private.

use crate::error::Result;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken (bias correction depends on it).
    pub t: usize,
    /// First and second moments, by variable name.
    pub moments: HashMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, moments: HashMap::new() }
    }

    /// One update of `var` (named `name`) with gradient `grad` at learning rate `lr`.
    pub fn update(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        // The moments outlive the step: built from a gradient that still records how it was
        // computed, they would keep every step's whole graph alive (gigabytes per step).
        let grad = grad.detach();
        let grad = &grad;
        let (m, v) = match self.moments.remove(name) {
            Some(mv) => mv,
            None => (var.zeros_like()?, var.zeros_like()?),
        };
        let m = ((m * self.beta1)? + (grad * (1.0 - self.beta1))?)?;
        let v = ((v * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
        let t = (self.t + 1) as i32;
        let m_hat = (&m / (1.0 - self.beta1.powi(t)))?;
        let v_hat = (&v / (1.0 - self.beta2.powi(t)))?;
        let step = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
        let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
        var.set(&(decayed - (step * lr)?)?)?;
        self.moments.insert(name.to_string(), (m, v));
        Ok(())
    }

    /// Call once after every variable has been updated.
    pub fn finish_step(&mut self) {
        self.t += 1;
    }
}
