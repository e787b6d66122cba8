//! The topology: a random connected graph of degree 4, and its distances.
//!
//! The graph is the union of two random Hamiltonian cycles (a standard
//! model of random 4-regular graphs): every node has degree 4 and the
//! graph is connected by construction, so no connectivity retry is
//! needed. The second cycle is drawn again while it shares an edge with
//! the first, so that no pair is linked twice.

use std::collections::{HashSet, VecDeque};

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same graph on every machine and every run, with no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.below(i + 1));
        }
        v
    }
}

/// An undirected graph on nodes `0..n`.
pub struct Graph {
    pub adj: Vec<Vec<usize>>,
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn cycle_edges(order: &[usize]) -> Vec<(usize, usize)> {
    (0..order.len()).map(|i| key(order[i], order[(i + 1) % order.len()])).collect()
}

impl Graph {
    /// A random connected graph on `n` nodes (n >= 5) where every node has
    /// degree 4, from `seed`. Draws the second cycle at most 1000 times;
    /// past that (never seen: each draw succeeds with probability about
    /// e^-2) it keeps the last draw and its few doubled pairs count once.
    pub fn random_4_regular(n: usize, seed: u64) -> Graph {
        let mut rng = Rng::new(seed);
        let first = cycle_edges(&rng.permutation(n));
        let taken: HashSet<(usize, usize)> = first.iter().copied().collect();
        let mut second = cycle_edges(&rng.permutation(n));
        for _ in 0..1000 {
            if second.iter().all(|e| !taken.contains(e)) && second.iter().collect::<HashSet<_>>().len() == n {
                break;
            }
            second = cycle_edges(&rng.permutation(n));
        }
        let mut edges: Vec<(usize, usize)> =
            taken.into_iter().chain(second).collect::<HashSet<_>>().into_iter().collect();
        edges.sort_unstable();
        let mut adj = vec![Vec::new(); n];
        for (a, b) in edges {
            adj[a].push(b);
            adj[b].push(a);
        }
        Graph { adj }
    }

    pub fn len(&self) -> usize {
        self.adj.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }

    /// Each edge once, as (smaller, larger).
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self
            .adj
            .iter()
            .enumerate()
            .flat_map(|(a, ns)| ns.iter().filter(move |&&b| a < b).map(move |&b| (a, b)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Hops from `from` to every node (BFS); `u32::MAX` where unreachable,
    /// and for `skip` and what is reachable only through it.
    pub fn distances(&self, from: usize, skip: Option<usize>) -> Vec<u32> {
        let mut d = vec![u32::MAX; self.len()];
        if Some(from) == skip {
            return d;
        }
        d[from] = 0;
        let mut q = VecDeque::from([from]);
        while let Some(u) = q.pop_front() {
            for &v in &self.adj[u] {
                if d[v] == u32::MAX && Some(v) != skip {
                    d[v] = d[u] + 1;
                    q.push_back(v);
                }
            }
        }
        d
    }

    /// The longest shortest path: BFS from every node.
    pub fn diameter(&self) -> u32 {
        (0..self.len()).map(|i| self.distances(i, None).into_iter().max().unwrap_or(0)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_regular_connected_and_repeatable() {
        for n in [5, 50, 1000] {
            let g = Graph::random_4_regular(n, 7);
            assert!(
                g.adj.iter().all(|a| a.len() == 4),
                "n={n}: degrees {:?}",
                g.adj.iter().map(Vec::len).collect::<Vec<_>>()
            );
            assert!(g.distances(0, None).iter().all(|&d| d != u32::MAX), "n={n}: connected");
            assert_eq!(g.edges().len(), 2 * n);
        }
        let (a, b) = (Graph::random_4_regular(100, 1), Graph::random_4_regular(100, 1));
        assert_eq!(a.edges(), b.edges());
        // log3(1000) is about 6.3: a random 4-regular graph of 1000 nodes
        // has a diameter near 8.
        let d = Graph::random_4_regular(1000, 1).diameter();
        assert!((6..=11).contains(&d), "{d}");
    }
}
