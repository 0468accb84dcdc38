//! Operators on channel-last maps (`[H, W, C]`): the recogniser runs channel-last throughout,
//! the detector for its heads and its widest layers. tract folds the moves to and from
//! channel-last that meet between two of these.

pub(crate) mod conv3x3;
pub(crate) mod depthwise;
pub(crate) mod pointwise;
