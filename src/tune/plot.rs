//! The loss curve as a small standalone SVG (no plotting library: a polyline per series).

/// One point per optimizer step: (step, training loss); validation losses at some steps.
pub fn loss_svg(title: &str, train: &[(usize, f64)], validation: &[(usize, f64)]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 360.0, 56.0, 16.0, 32.0, 40.0);
    let max_step = train.iter().chain(validation).map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let losses = train.iter().chain(validation).map(|p| p.1).filter(|l| l.is_finite());
    let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    let (lo, hi) = if lo.is_finite() { (lo.min(0.0), hi.max(lo + 1e-6)) } else { (0.0, 1.0) };
    let x = |s: usize| left + (s as f64 / max_step) * (w - left - right);
    let y = |l: f64| top + (1.0 - (l - lo) / (hi - lo)) * (h - top - bottom);
    let line = |pts: &[(usize, f64)]| {
        pts.iter()
            .filter(|p| p.1.is_finite())
            .map(|&(s, l)| format!("{:.1},{:.1}", x(s), y(l)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // A moving average over 16 steps makes the trend readable through per-example noise.
    let smooth: Vec<(usize, f64)> = train
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let from = i.saturating_sub(15);
            let window = &train[from..=i];
            (s, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
        })
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for i in 0..=4 {
        let l = lo + (hi - lo) * i as f64 / 4.0;
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{l:.2}</text>\n",
            w - right,
            left - 6.0,
            y(l) + 4.0,
            y = y(l)
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">optimizer step (max {})</text>\n",
        (left + w - right) / 2.0,
        h - 10.0,
        max_step as usize
    );
    svg += &format!("<polyline fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"1\" points=\"{}\"/>\n", line(train));
    svg += &format!("<polyline fill=\"none\" stroke=\"#08519c\" stroke-width=\"2\" points=\"{}\"/>\n", line(&smooth));
    if !validation.is_empty() {
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"#d94801\" stroke-width=\"2\" points=\"{}\"/>\n",
            line(validation)
        );
        for &(s, l) in validation {
            svg += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d94801\"/>\n", x(s), y(l));
        }
    }
    let legend_x = w - right - 200.0;
    svg += &format!("<text x=\"{legend_x}\" y=\"20\" fill=\"#08519c\">training loss (16-step mean)</text>\n");
    if !validation.is_empty() {
        svg += &format!("<text x=\"{legend_x}\" y=\"{}\" fill=\"#d94801\">held-out loss</text>\n", 34);
    }
    svg + "</svg>\n"
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
