//! The current versions' MinHash signatures -> near-duplicate clusters, all as differential
//! collections derived from the current versions, so that a modified or deleted file's old
//! contribution (its band keys, pairs, edges and membership) is retracted by differential itself.
//!
//! ```text
//! signed versions ─▶ groups (one node per distinct signature: its least path id)
//!   ─▶ LSH band buckets (a bucket over max_bucket is counted, not expanded)
//!   ─▶ candidate pairs ─▶ edges (estimated Jaccard >= threshold)
//!   ─▶ connected components (least path id propagated) ─▶ clusters of two or more files
//! ```
//!
//! Files with equal signatures are one node, so that a thousand copies of one file make one
//! bucket entry, not a million pairs. A cluster is named by its least path id, the
//! representative, and keeps that name while the representative stays in it.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use serde::{Deserialize, Serialize};

use super::stats::{Current, Dimension, Metric, Signed, StatKey, Stats};
use crate::kernels::minhash::{band_key, similarity};
use crate::pipeline::NearDuplicates;

/// One file's membership of a cluster, as the `near_duplicates` table writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The cluster's id: its representative's path id.
    pub cluster: u128,
    /// Signature values equal to the representative's.
    pub equal: u32,
    pub member: Arc<Signed>,
    pub representative: Arc<Signed>,
}

impl Membership {
    /// The estimated Jaccard similarity of the member to the representative.
    pub fn similarity(&self) -> f64 {
        f64::from(self.equal) / self.member.values.len().max(1) as f64
    }
}

/// The clusters' memberships.
pub type Memberships<'scope> = VecCollection<'scope, u64, Membership>;

/// What a band bucket gives: the pairs of its nodes, or, when it holds more than `max_bucket`
/// of them, a mark that it was not expanded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Bucket {
    Pair(u64, u64),
    Overflow,
}

/// The near-duplicate clusters of the current versions, and their statistics:
/// `near_duplicates/''/clusters`, `files` and `overflow_buckets`.
pub fn near_duplicates<'scope>(
    current: Current<'scope>,
    params: NearDuplicates,
) -> (Stats<'scope>, Memberships<'scope>) {
    let k = params.signature;
    // A signature of another length comes only from a damaged lake: it is not compared.
    let signed = current.flat_map_ref(move |id, tracked| {
        tracked
            .signed
            .clone()
            .filter(|s| s.values.len() == k)
            .map(|s| (*id, s))
    });
    // One node per distinct signature, with its least path id and that file's signature.
    let nodes = signed
        .clone()
        .map(|(id, s)| (s.group, (id, s)))
        .reduce_named("NearDupNodes", |_group, files, output| {
            let (id, s) = files[0].0;
            output.push(((*id, s.clone()), 1));
        });
    let (bands, rows, max_bucket) = (params.bands, params.rows, params.max_bucket);
    let buckets = nodes
        .clone()
        .flat_map(move |(group, (_, s))| {
            (0..bands).map(move |band| (band_key(&s.values, band, rows), group))
        })
        .reduce_named("NearDupBuckets", move |_key, groups, output| {
            if groups.len() > max_bucket {
                output.push((Bucket::Overflow, 1));
                return;
            }
            for (i, (a, _)) in groups.iter().enumerate() {
                for (b, _) in &groups[i + 1..] {
                    output.push((Bucket::Pair(**a, **b), 1));
                }
            }
        });
    let overflow = buckets.clone().flat_map(|(_, bucket)| {
        (bucket == Bucket::Overflow)
            .then(|| StatKey::new(Dimension::NearDuplicates, "", None, Metric::OverflowBuckets))
    });
    let pairs = buckets
        .flat_map(|(_, bucket)| match bucket {
            Bucket::Pair(a, b) => Some((a, b)),
            Bucket::Overflow => None,
        })
        .distinct();
    let signatures = nodes
        .clone()
        .map(|(group, (_, s))| (group, s))
        .arrange_by_key();
    let threshold = params.threshold;
    let edges = pairs
        .arrange_by_key()
        .join_core(signatures.clone(), |a, b, sa| Some((*b, (*a, sa.clone()))))
        .arrange_by_key()
        .join_core(signatures, move |b, (a, sa), sb| {
            (similarity(&sa.values, &sb.values) >= threshold).then_some((*a, *b))
        })
        .flat_map(|(a, b)| [(a, b), (b, a)]);
    let labels = propagate(edges, nodes.map(|(group, (least, _))| (group, least)));
    // Every signed file with its component's label.
    let labelled = signed
        .map(|(id, s)| (s.group, (id, s)))
        .join_map(labels, |_group, (id, s), label| (*label, (*id, s.clone())));
    let sizes = labelled
        .clone()
        .map(|(label, _)| label)
        .count()
        .filter(|(_, files)| *files >= 2);
    let clustered = labelled.semijoin(sizes.clone().map(|(label, _)| label));
    let representatives = clustered
        .clone()
        .filter(|(label, (id, _))| label == id)
        .map(|(label, (_, s))| (label, s));
    let memberships = clustered.join_map(representatives, |label, (_, member), representative| {
        let equal = member
            .values
            .iter()
            .zip(representative.values.iter())
            .filter(|(a, b)| a == b)
            .count() as u32;
        Membership {
            cluster: *label,
            equal,
            member: member.clone(),
            representative: representative.clone(),
        }
    });
    let stats = sizes
        .explode(|(_, files)| {
            let stat = |metric| StatKey::new(Dimension::NearDuplicates, "", None, metric);
            [(stat(Metric::Clusters), 1), (stat(Metric::Files), files)]
        })
        .concat(overflow);
    (stats, memberships)
}
