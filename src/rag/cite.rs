//! Reading `[n]` citations back out of a generated answer.

/// Source numbers cited in `answer`, in order of first appearance, limited to `1..=n_sources`.
/// Accepts `[2]`, `[1, 3]`, `[1][3]` and `[1-2]`; ignores anything else in brackets.
pub fn cited(answer: &str, n_sources: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        if inside.chars().all(|c| c.is_ascii_digit() || matches!(c, ',' | ' ' | '-' | '–')) {
            for part in inside.split(',') {
                let part = part.trim();
                let range: Vec<&str> = part.split(['-', '–']).map(str::trim).collect();
                let nums: Vec<usize> = match range.as_slice() {
                    [a] => a.parse().ok().into_iter().collect(),
                    [a, b] => match (a.parse::<usize>(), b.parse::<usize>()) {
                        (Ok(a), Ok(b)) if a <= b && b - a < 16 => (a..=b).collect(),
                        _ => vec![],
                    },
                    _ => vec![],
                };
                for n in nums {
                    if (1..=n_sources).contains(&n) && !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        rest = &rest[close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cited;

    #[test]
    fn parses_citation_forms() {
        assert_eq!(cited("A [2]. B [1, 3]. C [1][4].", 4), vec![2, 1, 3, 4]);
        assert_eq!(cited("Range [1-3]", 5), vec![1, 2, 3]);
        assert_eq!(cited("Out of range [7] and [0] and [x] and [", 3), Vec::<usize>::new());
        assert_eq!(cited("array[0] is not [2]", 2), vec![2]);
    }
}
