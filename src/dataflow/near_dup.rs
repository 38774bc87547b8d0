//! The current versions' MinHash signatures -> near-duplicate clusters, all as differential
//! collections derived from the current versions, so that a modified or deleted file's old
//! contribution (its band keys, pairs, edges and membership) is retracted by differential itself.
//!
//! ```text
//! signed versions at their epoch's last time, by signature group
//!   ─▶ nodes (one per group: its least path id, its files)
//!   ─▶ LSH band buckets (a bucket over max_bucket is counted, not expanded)
//!   ─▶ candidate pairs ─▶ edges (estimated Jaccard >= threshold)
//!   ─▶ connected components of the nodes with an edge (least path id propagated),
//!      and each other node of two or more files ─▶ their files: the clusters
//! ```
//!
//! Files with equal signatures are one node, so that a thousand copies of one file make one
//! bucket entry, not a million pairs. A cluster is named by its least path id, the
//! representative, and keeps that name while the representative stays in it. A node with
//! neither an edge nor a second file is in no cluster, and the labels are not propagated over
//! those: they are most nodes.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use serde::{Deserialize, Serialize};

use super::stats::{Current, Dimension, Metric, Signed, StatKey, Stats};
use super::time::{epoch_end, epoch_of};
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
    let files = current
        .flat_map_ref(move |id, tracked| {
            tracked
                .signed
                .clone()
                .filter(|s| s.values.len() == k)
                .map(|s| (s.group, (*id, s)))
        })
        // The clusters are written and published per epoch: computed once, at the epoch's last
        // time, not at every tick, whose clusters the next tick would retract.
        .delay(|time| epoch_end(epoch_of(*time)))
        .arrange_by_key_named("NearDupFiles");
    let nodes = nodes(files.clone());
    let (buckets, overflow) = buckets(&nodes, &params);
    let threshold = params.threshold;
    let edges = buckets
        .arrange_by_key()
        .join_core(nodes.clone(), |a, b, (_, sa, _)| {
            Some((*b, (*a, sa.clone())))
        })
        .arrange_by_key()
        .join_core(nodes.clone(), move |b, (a, sa), (_, sb, _)| {
            (similarity(&sa.values, &sb.values) >= threshold).then_some((*a, *b))
        })
        .flat_map(|(a, b)| [(a, b), (b, a)]);
    // Only nodes with an edge, or with several files, are in a cluster: the labels are
    // propagated over the nodes with an edge alone, and each other node of several files is a
    // cluster of its own.
    let linked = edges.clone().map(|(a, _)| a).distinct().arrange_by_self();
    let least = |node: &u64, (least, _, _): &(u128, Arc<Signed>, isize)| (*node, *least);
    let starts = nodes
        .clone()
        .join_core(linked.clone(), move |node, value, ()| {
            Some(least(node, value))
        });
    let several = nodes
        .flat_map_ref(move |node, value| (value.2 >= 2).then(|| least(node, value)))
        .antijoin(linked.as_collection(|node, ()| *node));
    let labels = propagate(edges, starts).concat(several);
    // Every file of those nodes, with its cluster's label.
    let clustered = labels
        .arrange_by_key()
        .join_core(files, |_node, label, (id, s)| {
            Some((*label, (*id, s.clone())))
        });
    let sizes = clustered.clone().map(|(label, _)| label).count();
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

/// The signed files, by signature group.
type Files<'scope> = Arranged<'scope, TraceAgent<ValSpine<u64, (u128, Arc<Signed>), u64, isize>>>;
/// One node per signature group: its least path id, that file's signature, and its files.
type Nodes<'scope> =
    Arranged<'scope, TraceAgent<ValSpine<u64, (u128, Arc<Signed>, isize), u64, isize>>>;

/// One node per distinct signature, so that a thousand copies of one file make one bucket
/// entry, not a million pairs.
fn nodes(files: Files<'_>) -> Nodes<'_> {
    files.reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<_, _, _, _>, _, _>(
        "NearDupNodes",
        |_group, files, output| {
            let (id, s) = files[0].0;
            let count = files.iter().map(|(_, diff)| diff).sum();
            output.push(((*id, s.clone(), count), 1));
        },
        |vec, key, upds| {
            vec.clear();
            vec.extend(upds.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
        },
    )
}

/// The candidate pairs of nodes that share a band bucket, and a statistic for each bucket of
/// more than `max_bucket` nodes, which is not expanded.
fn buckets<'scope>(
    nodes: &Nodes<'scope>,
    params: &NearDuplicates,
) -> (VecCollection<'scope, u64, (u64, u64)>, Stats<'scope>) {
    let (bands, rows, max_bucket) = (params.bands, params.rows, params.max_bucket);
    let buckets = nodes
        .clone()
        .flat_map_ref(move |group, (_, s, _)| {
            let (group, s) = (*group, s.clone());
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
    (pairs, overflow)
}
