//! Where inference time goes: per-operator timings of an optimised tract plan, for
//! `facepass bench --ops` and for whoever works on closing the gap to onnxruntime.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

use crate::error::FaceError;
use crate::ops::model::Plan;

/// Time spent in one kind of operator (tract's op name, e.g. `Conv`, `DepthWise`, `OptMatMul`),
/// summed over its nodes, median over runs; `min_ms` sums each node's fastest run, the figure to
/// compare operator changes by on a machine whose timings swing.
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    pub op: String,
    pub nodes: usize,
    pub ms: f64,
    pub min_ms: f64,
    pub share: f64,
}

/// One node of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub ms: f64,
    pub min_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanProfile {
    pub input_shape: Vec<usize>,
    pub runs: usize,
    /// Median over runs of the sum of all node times.
    pub total_ms: f64,
    /// The fastest run's sum.
    pub total_min_ms: f64,
    pub by_op: Vec<OpTime>,
    /// Every node, slowest first, unless cut by [`PlanProfile::keep_slowest`].
    pub slowest_nodes: Vec<NodeTime>,
}

impl PlanProfile {
    /// Keeps only the `n` slowest nodes (all of them if `n` is 0).
    pub fn keep_slowest(&mut self, n: usize) {
        if n > 0 {
            self.slowest_nodes.truncate(n);
        }
    }
}

/// Runs `plan` `runs` times (after one warm-up run) on a fixed input in [-1, 1] and times every
/// node. Node timings add `Instant` overhead (~50 ns per node), negligible next to convolutions.
pub(crate) fn profile_plan(
    plan: &Plan,
    input_shape: &[usize],
    runs: usize,
) -> Result<PlanProfile, FaceError> {
    let runs = runs.max(1);
    let len: usize = input_shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let input = Tensor::from_shape(input_shape, &values).map_err(FaceError::inference)?;
    let mut state = SimpleState::new(plan).map_err(FaceError::inference)?;

    // per node: (name, op, times over runs)
    let mut per_node: HashMap<usize, (String, String, Vec<f64>)> = HashMap::new();
    let mut totals = Vec::with_capacity(runs);
    for run in 0..=runs {
        let mut this_run = Vec::new();
        state
            .run_plan_with_eval(
                tvec![input.clone().into()],
                |ctx, op_state, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    this_run.push((node.id, node.name.clone(), node.op.name().to_string(), t));
                    out
                },
            )
            .map_err(FaceError::inference)?;
        // `t` was taken before each node; a node's time is the gap to the next start, the
        // last node's to now. Plans run nodes sequentially, so this is exact up to overhead.
        let end = Instant::now();
        let starts: Vec<Instant> = this_run.iter().map(|r| r.3).skip(1).chain([end]).collect();
        if run == 0 {
            continue; // warm-up
        }
        let mut total = 0.0;
        for ((id, name, op, start), next) in this_run.into_iter().zip(starts) {
            let ms = next.duration_since(start).as_secs_f64() * 1000.0;
            total += ms;
            per_node
                .entry(id)
                .or_insert_with(|| (name, op, Vec::new()))
                .2
                .push(ms);
        }
        totals.push(total);
    }

    let total_min_ms = fastest(&totals);
    let total_ms = median(totals);
    let mut nodes: Vec<NodeTime> = per_node
        .into_values()
        .map(|(node, op, times)| NodeTime {
            node,
            op,
            min_ms: fastest(&times),
            ms: median(times),
        })
        .collect();
    let mut by_op: HashMap<String, (usize, f64, f64)> = HashMap::new();
    for n in &nodes {
        let e = by_op.entry(n.op.clone()).or_default();
        e.0 += 1;
        e.1 += n.ms;
        e.2 += n.min_ms;
    }
    let op_sum: f64 = by_op.values().map(|v| v.1).sum();
    let mut by_op: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (count, ms, min_ms))| OpTime {
            op,
            nodes: count,
            ms,
            min_ms,
            share: if op_sum > 0.0 { ms / op_sum } else { 0.0 },
        })
        .collect();
    by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(PlanProfile {
        input_shape: input_shape.to_vec(),
        runs,
        total_ms,
        total_min_ms,
        by_op,
        slowest_nodes: nodes,
    })
}

fn fastest(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
