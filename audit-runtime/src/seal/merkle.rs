//! Merkle trees exactly as RFC 6962 (and RFC 9162) define them, over the record commitments of
//! one stream: leaf and node hashing, the compact state a writer keeps while it appends, the
//! interior nodes each batch seal stores, proofs (inclusion and consistency) built from those
//! stored nodes, and their verification. Pure functions and plain data: no store, no I/O.
//!
//! Why stored nodes: a proof needs the hashes of whole subtrees. Each interior node of the tree
//! is stored exactly once, in the seal of the batch whose last leaf completes it (on average one
//! node per record), so any subtree's hash is read from one seal instead of being recomputed from
//! the leaves under it, and a proof reads O(log n) hashes.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: the SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf whose data is `data`: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (`n` ≥ 2): where RFC 6962 splits a list of `n`.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// How many interior nodes the leaves `0..n` complete between them: each leaf `j` completes as
/// many as `j` has trailing one bits, and those add up to `n` minus the number of one bits of `n`.
pub fn interior_count(n: u64) -> u64 {
    n - u64::from(n.count_ones())
}

/// A perfect subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Height above the leaves (0: a leaf).
    pub level: u32,
    /// Position among the subtrees of that height.
    pub index: u64,
}

impl Node {
    /// The last leaf under it: the one whose appending completes it.
    pub fn last_leaf(self) -> u64 {
        ((self.index + 1) << self.level) - 1
    }

    /// For an interior node, its position among the interior nodes that the leaves from `first`
    /// on complete, in the order they complete them (what a seal whose first leaf is `first`
    /// stores).
    pub fn stored_offset(self, first: u64) -> Option<u64> {
        if self.level == 0 {
            return None;
        }
        let leaf = self.last_leaf();
        (leaf >= first)
            .then(|| interior_count(leaf) - interior_count(first) + u64::from(self.level) - 1)
    }
}

/// The perfect subtrees whose hashes make up the hash of the leaves `lo..hi`, in the order
/// [`range_hash`] asks for them. `lo..hi` must be a range RFC 6962's recursion meets (every
/// range a proof names is).
pub fn range_nodes(lo: u64, hi: u64) -> Vec<Node> {
    let mut out = Vec::new();
    range_hash(lo, hi, &mut |n| {
        out.push(n);
        [0; 32]
    });
    out
}

/// The hash of the leaves `lo..hi`, from the hashes of perfect subtrees given by `perfect`.
pub fn range_hash(lo: u64, hi: u64, perfect: &mut dyn FnMut(Node) -> Hash) -> Hash {
    let len = hi - lo;
    if len == 0 {
        return empty_root();
    }
    if len.is_power_of_two() && lo % len == 0 {
        let level = len.trailing_zeros();
        return perfect(Node {
            level,
            index: lo >> level,
        });
    }
    let k = split(len);
    let left = range_hash(lo, lo + k, perfect);
    let right = range_hash(lo + k, hi, perfect);
    node_hash(&left, &right)
}

/// The ranges of leaves whose hashes make the inclusion proof of leaf `m` in the tree of `n`
/// leaves, leaf's sibling first (RFC 6962 2.1.1, PATH).
pub fn inclusion_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn path(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(m, lo, lo + k, out);
            out.push((lo + k, hi));
        } else {
            path(m - k, lo + k, hi, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if m < n {
        path(m, 0, n, &mut out);
    }
    out
}

/// The ranges of leaves whose hashes make the consistency proof from the tree of `m` leaves to
/// the tree of `n` (RFC 6962 2.1.2, PROOF); empty when `m` is 0 or not below `n`.
pub fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn subproof(m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<(u64, u64)>) {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push((lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, lo, lo + k, whole, out);
            out.push((lo + k, hi));
        } else {
            subproof(m - k, lo + k, hi, false, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if 0 < m && m < n {
        subproof(m, 0, n, true, &mut out);
    }
    out
}

/// A proof made of the hashes of `ranges`, each read through `perfect`.
pub fn proof_from(ranges: &[(u64, u64)], perfect: &mut dyn FnMut(Node) -> Hash) -> Vec<Hash> {
    ranges
        .iter()
        .map(|&(lo, hi)| range_hash(lo, hi, perfect))
        .collect()
}

/// Whether `proof` shows that the leaf with hash `leaf` is leaf `index` of the tree of `size`
/// leaves whose root is `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows that the tree of `m` leaves with root `root_m` is the start of the tree
/// of `n` leaves with root `root_n` (RFC 9162 2.1.4.2; equal sizes need an empty proof and equal
/// roots; nothing is consistent with a tree that shrank).
pub fn verify_consistency(m: u64, n: u64, root_m: &Hash, root_n: &Hash, proof: &[Hash]) -> bool {
    if m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && root_m == root_n;
    }
    if m == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(root_m);
    }
    path.extend(proof.iter());
    let (mut f, mut s) = (m - 1, n - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*path[0], *path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *root_m && sr == *root_n && s == 0
}

/// What a writer keeps of its stream's tree while it appends: the hashes of the perfect subtrees
/// that the tree's size decomposes into (largest first), O(log n) of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (its leaf hash); `completed` gets each interior node the leaf completes,
    /// lowest first.
    pub fn push(&mut self, leaf: Hash, completed: &mut dyn FnMut(Hash)) {
        let mut hash = leaf;
        let mut index = self.size;
        while index & 1 == 1 {
            let left = self.peaks.pop().expect("a peak per one bit of the size");
            hash = node_hash(&left, &hash);
            completed(hash);
            index >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The tree's root hash.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => empty_root(),
            Some(last) => peaks.fold(*last, |r, p| node_hash(p, &r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Hash {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The leaves of transparency-dev/merkle's test data (testonly/constants.go).
    fn leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|l| leaf_hash(&unhex(l)))
        .collect()
    }

    /// Their roots for the sizes 0 to 8.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Every perfect subtree hash of `leaves`, computed from the leaves.
    fn perfect(leaves: &[Hash]) -> impl FnMut(Node) -> Hash + '_ {
        move |n: Node| {
            let lo = (n.index << n.level) as usize;
            let hi = lo + (1usize << n.level);
            fn mth(l: &[Hash]) -> Hash {
                if l.len() == 1 {
                    return l[0];
                }
                let k = split(l.len() as u64) as usize;
                node_hash(&mth(&l[..k]), &mth(&l[k..]))
            }
            mth(&leaves[lo..hi])
        }
    }

    #[test]
    fn hashing_follows_the_rfc() {
        assert_eq!(
            empty_root(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            leaf_hash(b"L123456"),
            hex("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
        );
        let mut f = Frontier::new();
        let leaves = leaves();
        assert_eq!(f.root(), hex(ROOTS[0]));
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l, &mut |_| {});
            assert_eq!(f.root(), hex(ROOTS[i + 1]), "size {}", i + 1);
            assert_eq!(
                range_hash(0, i as u64 + 1, &mut perfect(&leaves)),
                hex(ROOTS[i + 1])
            );
        }
    }

    #[test]
    fn the_rfc_test_vectors_verify_and_the_proofs_made_here_are_theirs() {
        let leaves = leaves();
        let inclusion: [(u64, u64, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in inclusion {
            let want: Vec<Hash> = want.iter().map(|h| hex(h)).collect();
            let made = proof_from(&inclusion_ranges(m, n), &mut perfect(&leaves));
            assert_eq!(made, want, "inclusion of {m} in {n}");
            let root = hex(ROOTS[n as usize]);
            assert!(verify_inclusion(m, n, &leaves[m as usize], &want, &root));
            assert!(!verify_inclusion(
                m + 1,
                n,
                &leaves[m as usize],
                &want,
                &root
            ));
            assert!(!verify_inclusion(
                m,
                n * 2,
                &leaves[m as usize],
                &want,
                &root
            ));
            assert!(!verify_inclusion(
                m,
                n,
                &leaves[m as usize],
                &want[1..],
                &root
            ));
        }
        let consistency: [(u64, u64, &[&str]); 3] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in consistency {
            let want: Vec<Hash> = want.iter().map(|h| hex(h)).collect();
            let made = proof_from(&consistency_ranges(m, n), &mut perfect(&leaves));
            assert_eq!(made, want, "consistency of {m} with {n}");
            let (rm, rn) = (hex(ROOTS[m as usize]), hex(ROOTS[n as usize]));
            assert!(verify_consistency(m, n, &rm, &rn, &want));
            assert!(!verify_consistency(m, n, &rn, &rm, &want));
            assert!(!verify_consistency(m, n, &rm, &rn, &want[1..]));
        }
    }

    #[test]
    fn every_proof_of_every_small_tree_verifies_and_a_wrong_one_does_not() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut roots = vec![empty_root()];
        let mut f = Frontier::new();
        for l in &leaves {
            f.push(*l, &mut |_| {});
            roots.push(f.root());
        }
        for n in 1..=40u64 {
            for m in 0..n {
                let p = proof_from(&inclusion_ranges(m, n), &mut perfect(&leaves));
                assert!(verify_inclusion(
                    m,
                    n,
                    &leaves[m as usize],
                    &p,
                    &roots[n as usize]
                ));
                let other = leaves[((m + 1) % 40) as usize];
                assert!(!verify_inclusion(m, n, &other, &p, &roots[n as usize]));
                if m > 0 {
                    let p = proof_from(&consistency_ranges(m, n), &mut perfect(&leaves));
                    assert!(verify_consistency(
                        m,
                        n,
                        &roots[m as usize],
                        &roots[n as usize],
                        &p
                    ));
                    assert!(!verify_consistency(
                        m,
                        n,
                        &roots[m as usize - 1],
                        &roots[n as usize],
                        &p
                    ));
                }
            }
        }
    }

    #[test]
    fn stored_nodes_are_found_where_the_appending_put_them() {
        let leaves: Vec<Hash> = (0u32..37).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        // Batches of uneven sizes, as seals make them: each keeps the nodes its leaves complete.
        let mut batches: Vec<(u64, Vec<Hash>)> = Vec::new();
        for chunk in leaves.chunks(5) {
            let first = f.size();
            let mut nodes = Vec::new();
            for l in chunk {
                f.push(*l, &mut |h| nodes.push(h));
            }
            assert_eq!(
                nodes.len() as u64,
                interior_count(f.size()) - interior_count(first)
            );
            batches.push((first, nodes));
        }
        let mut truth = perfect(&leaves);
        for level in 1..6u32 {
            for index in 0..(37u64 >> level) {
                let n = Node { level, index };
                let (first, nodes) = batches
                    .iter()
                    .rev()
                    .find(|(first, _)| *first <= n.last_leaf())
                    .unwrap();
                let at = n.stored_offset(*first).unwrap() as usize;
                assert_eq!(nodes[at], truth(n), "{n:?}");
            }
        }
    }
}
