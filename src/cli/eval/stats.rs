//! Threshold calibration on labelled photos: `facepass eval DIR`, with DIR laid out as
//! `identities/<name>/*.jpg` (or `<name>/*.jpg`). Same-person and different-person similarity
//! distributions, equal error rate, true-accept rate at fixed false-accept rates, for photo vs
//! photo and for enrolled template vs probe, and the threshold for a chosen FAR.

use serde::Serialize;

use facepass_face::embedding::cosine;
use facepass_face::Embedding;

/// The false-accept rates reported.
pub const FARS: [f64; 3] = [0.01, 0.001, 0.0001];

#[derive(Debug, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub min: f32,
    pub p1: f32,
    pub p5: f32,
    pub median: f32,
    pub p95: f32,
    pub p99: f32,
    pub max: f32,
}

impl Distribution {
    fn of(scores: &[f32]) -> Distribution {
        let mut s = scores.to_vec();
        s.sort_by(f32::total_cmp);
        let q = |p: f64| -> f32 {
            if s.is_empty() {
                return f32::NAN;
            }
            s[((s.len() - 1) as f64 * p).round() as usize]
        };
        Distribution {
            count: s.len(),
            min: q(0.0),
            p1: q(0.01),
            p5: q(0.05),
            median: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            max: q(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AtFar {
    pub far: f64,
    /// Lowest threshold whose measured FAR is <= `far`.
    pub threshold: f32,
    pub tar: f64,
    /// False when there are too few impostor pairs to measure this FAR (fewer than 1/far):
    /// the threshold is then only "above every impostor seen".
    pub measurable: bool,
}

/// Measured rates at one threshold.
#[derive(Debug, Serialize)]
pub struct Rates {
    pub threshold: f32,
    pub tar: f64,
    pub far: f64,
    pub impostors_accepted: usize,
}

#[derive(Debug, Serialize)]
pub struct Scores {
    pub genuine: Distribution,
    pub impostor: Distribution,
    pub eer: f64,
    pub eer_threshold: f32,
    pub at_far: Vec<AtFar>,
    /// At the threshold the server is configured with for this kind of comparison.
    pub at_configured: Rates,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub faces: usize,
    pub identities: usize,
    /// Photo against photo, every pair.
    pub pairs: Scores,
    /// Template (normalised mean of the identity's other photos) against a held-out photo.
    pub template: Scores,
}

/// Threshold at which at most `far` of impostor scores are accepted (score >= threshold).
fn threshold_at(impostor_desc: &[f32], far: f64) -> (f32, bool) {
    let n = impostor_desc.len();
    let allowed = (far * n as f64).floor() as usize;
    let measurable = far * n as f64 >= 1.0;
    let threshold = match impostor_desc.get(allowed) {
        // Just above the first impostor that must be refused.
        Some(v) => next_up(*v),
        None => f32::MIN,
    };
    (threshold, measurable)
}

fn next_up(v: f32) -> f32 {
    // The smallest float above v; scores are compared with >=.
    if v.is_nan() || v == f32::INFINITY {
        return v;
    }
    let bits = v.to_bits();
    let next = if v >= 0.0 { bits + 1 } else { bits - 1 };
    if v == 0.0 {
        return f32::from_bits(1);
    }
    f32::from_bits(next)
}

fn scores(genuine: &[f32], impostor: &[f32], configured: f32) -> Scores {
    let mut imp_desc = impostor.to_vec();
    imp_desc.sort_by(|a, b| b.total_cmp(a));
    let tar =
        |t: f32| genuine.iter().filter(|g| **g >= t).count() as f64 / genuine.len().max(1) as f64;
    let far =
        |t: f32| impostor.iter().filter(|i| **i >= t).count() as f64 / impostor.len().max(1) as f64;
    // EER: scan candidate thresholds (every observed score) for the smallest |FAR - FRR|.
    let mut candidates: Vec<f32> = genuine.iter().chain(impostor).copied().collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best = (f64::INFINITY, 0.0f64, 0.5f32);
    for t in candidates.iter().flat_map(|c| [*c, next_up(*c)]) {
        let (fa, fr) = (far(t), 1.0 - tar(t));
        let gap = (fa - fr).abs();
        if gap < best.0 {
            best = (gap, (fa + fr) / 2.0, t);
        }
    }
    // Where several thresholds give zero error, report the middle of the gap between classes.
    let max_imp = imp_desc.first().copied().unwrap_or(f32::MIN);
    let min_gen = genuine.iter().copied().fold(f32::INFINITY, f32::min);
    let eer_threshold = if best.1 == 0.0 && min_gen > max_imp {
        (min_gen + max_imp) / 2.0
    } else {
        best.2
    };
    Scores {
        genuine: Distribution::of(genuine),
        impostor: Distribution::of(impostor),
        eer: best.1,
        eer_threshold,
        at_far: FARS
            .iter()
            .map(|f| {
                let (threshold, measurable) = threshold_at(&imp_desc, *f);
                AtFar {
                    far: *f,
                    threshold,
                    tar: tar(threshold),
                    measurable,
                }
            })
            .collect(),
        at_configured: Rates {
            threshold: configured,
            tar: tar(configured),
            far: far(configured),
            impostors_accepted: impostor.iter().filter(|i| **i >= configured).count(),
        },
    }
}

/// Threshold at which the measured FAR is at most `far` (photo-vs-photo pairs).
pub fn threshold_for(report_impostors: &[f32], far: f64) -> f32 {
    let mut desc = report_impostors.to_vec();
    desc.sort_by(|a, b| b.total_cmp(a));
    threshold_at(&desc, far).0
}

/// `faces`: one embedding per photo with the identity it shows. `search_threshold` is applied to
/// photo pairs, `verify_threshold` to template/probe pairs.
pub fn evaluate(
    images: usize,
    faces: &[(String, Embedding)],
    search_threshold: f32,
    verify_threshold: f32,
) -> (EvalReport, Vec<f32>) {
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    for i in 0..faces.len() {
        for j in i + 1..faces.len() {
            let s = cosine(faces[i].1.as_slice(), faces[j].1.as_slice());
            if faces[i].0 == faces[j].0 {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    let mut names: Vec<&str> = faces.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names.dedup();

    // Templates: every identity's full template for impostor probes; for its own photos, the
    // template of its other photos (leave one out), so no photo is compared with itself.
    let template = |members: &mut dyn Iterator<Item = &[f32]>| -> Option<Vec<f32>> {
        let mut sum: Vec<f32> = Vec::new();
        for m in members {
            if sum.is_empty() {
                sum = vec![0.0; m.len()];
            }
            for (s, x) in sum.iter_mut().zip(m) {
                *s += x;
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm > 0.0).then(|| sum.into_iter().map(|x| x / norm).collect())
    };
    let full: Vec<(&str, Vec<f32>)> = names
        .iter()
        .filter_map(|n| {
            template(
                &mut faces
                    .iter()
                    .filter(|(m, _)| m == n)
                    .map(|(_, e)| e.as_slice()),
            )
            .map(|t| (*n, t))
        })
        .collect();
    let mut t_genuine = Vec::new();
    let mut t_impostor = Vec::new();
    for (i, (name, probe)) in faces.iter().enumerate() {
        let others = &mut faces
            .iter()
            .enumerate()
            .filter(|(j, (m, _))| *j != i && m == name)
            .map(|(_, (_, e))| e.as_slice());
        if let Some(t) = template(others) {
            t_genuine.push(cosine(&t, probe.as_slice()));
        }
        for (other, t) in &full {
            if other != name {
                t_impostor.push(cosine(t, probe.as_slice()));
            }
        }
    }
    let report = EvalReport {
        images,
        faces: faces.len(),
        identities: names.len(),
        pairs: scores(&genuine, &impostor, search_threshold),
        template: scores(&t_genuine, &t_impostor, verify_threshold),
    };
    (report, impostor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_separated_scores_have_zero_eer_and_full_tar() {
        let s = scores(&[0.6, 0.7, 0.8], &[0.0, 0.1, 0.2, 0.3], 0.65);
        assert!((s.at_configured.tar - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.at_configured.impostors_accepted, 0);
        assert_eq!(s.eer, 0.0);
        assert!((s.eer_threshold - 0.45).abs() < 1e-6, "{}", s.eer_threshold);
        assert!(s.at_far.iter().all(|a| a.tar == 1.0));
        assert!(s
            .at_far
            .iter()
            .all(|a| a.threshold > 0.3 && a.threshold < 0.31));
    }

    #[test]
    fn overlapping_scores_give_a_positive_eer() {
        let s = scores(&[0.2, 0.5, 0.6, 0.7], &[0.1, 0.3, 0.55, 0.0], 0.25);
        assert_eq!(s.at_configured.impostors_accepted, 2);
        assert!(s.eer > 0.0 && s.eer < 0.5, "{}", s.eer);
        // At FAR 1% with 4 impostors nothing may pass: threshold above the best impostor.
        assert!(s.at_far[0].threshold > 0.55);
        assert!(!s.at_far[0].measurable);
        assert!((s.at_far[0].tar - 0.5).abs() < 1e-9);
    }

    #[test]
    fn threshold_for_a_far_lets_through_at_most_that_share() {
        let imp: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_for(&imp, 0.01);
        let passed = imp.iter().filter(|s| **s >= t).count();
        assert_eq!(passed, 10);
    }
}
