// BERT self-attention for one position and head: every real (unmasked) position of the same text
// is attended to, none of the padding. Scores, softmax and the weighted sum of values in one
// pass, with a running maximum (online softmax), so no score matrix is stored.
// q, k, v, out: positions × heads × head_dim; head_dim at most 64.
// mask: 1 for a real token, 0 for padding.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let h = id.y;
    if (i >= step.positions || h >= shape.heads) { return; }
    let hd = shape.head_dim;
    let width = shape.heads * hd;
    let first = i / step.len * step.len;   // the first position of this text
    let qa = i * width + h * hd;
    let scale = 1.0 / sqrt(f32(hd));
    var acc: array<f32, 64>;
    for (var d = 0u; d < hd; d++) { acc[d] = 0.0; }
    var m = -3.4e38;
    var sum = 0.0;
    for (var t = first; t < first + step.len; t++) {
        if (mask[t] == 0u) { continue; }
        let ka = t * width + h * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) { s += q[qa + d] * k[ka + d]; }
        s *= scale;
        let m_new = max(m, s);
        let rescale = exp(m - m_new);
        let w = exp(s - m_new);
        sum = sum * rescale + w;
        for (var d = 0u; d < hd; d++) { acc[d] = acc[d] * rescale + w * v[ka + d]; }
        m = m_new;
    }
    for (var d = 0u; d < hd; d++) {
        var value = 0.0;
        if (sum > 0.0) { value = acc[d] / sum; }
        out[qa + d] = value;
    }
}
