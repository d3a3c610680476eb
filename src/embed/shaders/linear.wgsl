// out (positions × rows) = x (positions × cols) · Wᵀ + b for an f32 W (rows × cols), then GELU
// when `gelu` is set (the exact one, with erf, as BERT's reference uses). One thread per value.

// erf(x) to within 1.5e-7 (Abramowitz and Stegun, formula 7.1.26): WGSL has no erf.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-x * x));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let i = id.y;
    if (r >= shape.rows || i >= step.positions) { return; }
    var acc = 0.0;
    for (var c = 0u; c < shape.cols; c++) {
        acc += x[i * shape.cols + c] * w[r * shape.cols + c];
    }
    acc += b[r];
    if (shape.gelu != 0u) {
        acc = 0.5 * acc * (1.0 + erf(acc * 0.70710678118654752));
    }
    out[i * shape.rows + r] = acc;
}
