//! Coreference clustering: complete linkage over mention-pair probabilities, as the reference
//! implementation clusters (with scikit-learn's agglomerative clustering on `1 − p`).
//! Two clusters merge only if **every** cross pair has probability `> threshold`, i.e. the
//! complete-linkage distance `max(1 − p)` is strictly below `1 − threshold`.

use kodama::{linkage, Method};

/// Clusters `n` mentions given the condensed upper triangle of pair probabilities
/// (`(0,1), (0,2), …, (0,n−1), (1,2), …`; the score of the directed pair (earlier, later)).
/// Returns clusters of mention indices, each ascending, ordered by their first member.
/// Deterministic; `n = 0` gives no cluster and `n = 1` one singleton.
///
/// # Panics
/// If `probs.len() != n (n − 1) / 2`.
pub fn complete_linkage(n: usize, probs: &[f32], threshold: f32) -> Vec<Vec<usize>> {
    assert_eq!(
        probs.len(),
        n * n.saturating_sub(1) / 2,
        "condensed matrix size"
    );
    let mut parent: Vec<usize> = (0..n).collect();
    if n > 1 {
        // In f64, `1 − p < 1 − τ` is exactly `p > τ` for f32 inputs near the threshold.
        let mut dist: Vec<f64> = probs.iter().map(|&p| 1.0 - f64::from(p)).collect();
        let cut = 1.0 - f64::from(threshold);
        let dendrogram = linkage(&mut dist, n, Method::Complete);
        // Complete linkage is monotone, so the merges below the cut are exactly the greedy
        // agglomeration that stops at the cut; the dendrogram labels merged clusters n + step.
        let mut label_root: Vec<usize> = (0..n).collect();
        for step in dendrogram.steps() {
            let (a, b) = (label_root[step.cluster1], label_root[step.cluster2]);
            let root = a.min(b);
            if step.dissimilarity < cut {
                parent[a.max(b)] = root;
            }
            label_root.push(root);
        }
    }
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    let mut cluster_of_root = vec![usize::MAX; n];
    for i in 0..n {
        let root = find(&mut parent, i);
        if cluster_of_root[root] == usize::MAX {
            cluster_of_root[root] = clusters.len();
            clusters.push(Vec::new());
        }
        clusters[cluster_of_root[root]].push(i);
    }
    clusters
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Index of pair `(i, j)`, `i < j < n`, in the condensed upper triangle.
pub fn condensed_index(n: usize, i: usize, j: usize) -> usize {
    debug_assert!(i < j && j < n);
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condensed(n: usize, p: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..n {
            for j in (i + 1)..n {
                assert_eq!(condensed_index(n, i, j), out.len());
                out.push(p(i, j));
            }
        }
        out
    }

    #[test]
    fn trivial_sizes() {
        assert!(complete_linkage(0, &[], 0.85).is_empty());
        assert_eq!(complete_linkage(1, &[], 0.85), vec![vec![0]]);
        assert_eq!(complete_linkage(2, &[0.9], 0.85), vec![vec![0, 1]]);
        assert_eq!(complete_linkage(2, &[0.5], 0.85), vec![vec![0], vec![1]]);
    }

    #[test]
    fn threshold_is_strict() {
        assert_eq!(complete_linkage(2, &[0.85], 0.85), vec![vec![0], vec![1]]);
        let above = f32::from_bits(0.85f32.to_bits() + 1);
        assert_eq!(complete_linkage(2, &[above], 0.85), vec![vec![0, 1]]);
    }

    #[test]
    fn chain_merges_under_single_but_not_complete_linkage() {
        // 0–1 and 1–2 are confident, 0–2 is not: single linkage would chain all three.
        let probs = condensed(3, |i, j| if (i, j) == (0, 2) { 0.1 } else { 0.95 });
        let clusters = complete_linkage(3, &probs, 0.85);
        assert_eq!(clusters.len(), 2);
        assert!(clusters.iter().all(|c| c.len() <= 2));
        let single = kodama::linkage(
            &mut probs
                .iter()
                .map(|&p| 1.0 - f64::from(p))
                .collect::<Vec<_>>(),
            3,
            Method::Single,
        );
        assert!(single.steps().iter().all(|s| s.dissimilarity < 0.15));
    }

    #[test]
    fn two_groups_with_one_weak_cross_link() {
        // {0, 2, 4} and {1, 3} are cliques; one strong cross pair (2, 3) must not join them.
        let group = |i: usize| i % 2;
        let probs = condensed(5, |i, j| {
            if group(i) == group(j) || (i, j) == (2, 3) {
                0.99
            } else {
                0.01
            }
        });
        assert_eq!(
            complete_linkage(5, &probs, 0.85),
            vec![vec![0, 2, 4], vec![1, 3]]
        );
    }

    #[test]
    fn deterministic_and_a_partition() {
        let n = 40;
        let probs = condensed(n, |i, j| (((i * 31 + j * 17) % 100) as f32) / 100.0);
        let a = complete_linkage(n, &probs, 0.5);
        assert_eq!(a, complete_linkage(n, &probs, 0.5));
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        // Every pair inside a cluster clears the threshold (the complete-linkage guarantee).
        for c in &a {
            for (x, &i) in c.iter().enumerate() {
                for &j in &c[x + 1..] {
                    assert!(probs[condensed_index(n, i, j)] > 0.5);
                }
            }
        }
    }
}
