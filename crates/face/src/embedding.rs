//! A face embedding that is always finite, of the expected dimension and unit length.

use serde::{Serialize, Serializer};

use crate::error::FaceError;

/// How far from 1.0 the norm of a stored vector may be: f32 round trips through JSON or
/// pgvector keep norms within ~1e-6; anything further off was not produced by us.
pub const UNIT_NORM_TOLERANCE: f32 = 1e-3;

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// From raw model output: checks, then L2-normalises.
    pub fn from_model_output(values: Vec<f32>, dim: usize) -> Result<Embedding, FaceError> {
        check_shape(&values, dim)?;
        let norm = l2_norm(&values);
        if norm <= f32::EPSILON || !norm.is_finite() {
            return Err(FaceError::InvalidEmbedding(format!(
                "cannot normalise a vector of norm {norm}"
            )));
        }
        let inv = 1.0 / norm;
        Ok(Embedding(values.into_iter().map(|v| v * inv).collect()))
    }

    /// From a vector that must already be unit length (read back from storage).
    pub fn from_unit(values: Vec<f32>, dim: usize) -> Result<Embedding, FaceError> {
        check_shape(&values, dim)?;
        let norm = l2_norm(&values);
        if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
            return Err(FaceError::InvalidEmbedding(format!(
                "norm is {norm}, expected 1 within {UNIT_NORM_TOLERANCE}"
            )));
        }
        Ok(Embedding(values))
    }

    /// Cosine similarity to another embedding ([`cosine`]).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        cosine(&self.0, &other.0)
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    pub fn dim(&self) -> usize {
        self.0.len()
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }
}

impl Serialize for Embedding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

fn check_shape(values: &[f32], dim: usize) -> Result<(), FaceError> {
    if values.len() != dim {
        return Err(FaceError::InvalidEmbedding(format!(
            "dimension is {}, expected {dim}",
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(FaceError::InvalidEmbedding(format!(
            "value {i} is not finite"
        )));
    }
    Ok(())
}

fn l2_norm(values: &[f32]) -> f32 {
    // f64 accumulation: 512 squares in f32 lose enough to matter at the 1e-6 level.
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt() as f32
}

/// Cosine similarity of two unit vectors (embeddings, or templates normalised like them), so
/// the dot product. Vectors of different dimensions (different models) are never similar: 0.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dim: usize) -> Vec<f32> {
        let v = 1.0 / (dim as f32).sqrt();
        vec![v; dim]
    }

    #[test]
    fn invalid_vectors_are_rejected() {
        let mut nan = unit(4);
        nan[2] = f32::NAN;
        let mut inf = unit(4);
        inf[0] = f32::INFINITY;
        let cases: Vec<(&str, Vec<f32>)> = vec![
            ("nan", nan),
            ("infinite", inf),
            ("wrong dimension", unit(3)),
            ("zero vector", vec![0.0; 4]),
            (
                "not unit length",
                vec![0.5; 4].into_iter().map(|v| v * 1.1).collect(),
            ),
            ("empty", vec![]),
        ];
        for (name, v) in cases {
            assert!(
                matches!(
                    Embedding::from_unit(v, 4),
                    Err(FaceError::InvalidEmbedding(_))
                ),
                "{name} was accepted"
            );
        }
        assert!(Embedding::from_model_output(vec![0.0; 4], 4).is_err());
        assert!(Embedding::from_model_output(vec![f32::NAN, 1.0, 0.0, 0.0], 4).is_err());
        assert!(Embedding::from_model_output(vec![1.0; 5], 4).is_err());
    }

    #[test]
    fn model_output_is_normalised_and_cosine_is_the_dot_product() {
        let a = Embedding::from_model_output(vec![3.0, 4.0, 0.0], 3).expect("valid");
        assert!((a.as_slice()[0] - 0.6).abs() < 1e-6);
        let b = Embedding::from_unit(vec![1.0, 0.0, 0.0], 3).expect("unit");
        assert!((a.cosine(&b) - 0.6).abs() < 1e-6);
        assert!((a.cosine(&a) - 1.0).abs() < 1e-6);
        let other_dim = Embedding::from_unit(vec![1.0, 0.0], 2).expect("unit");
        assert_eq!(a.cosine(&other_dim), 0.0);
    }
}
