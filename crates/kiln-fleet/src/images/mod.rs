//! Environment images: a repo's checkout with its dependencies installed, built and warmed,
//! frozen as read-only layers that sessions start from. See [`build`] for how one is made and
//! [`environment`] for what a repo declares.

mod build;
pub mod current;
pub mod environment;
mod live;

pub(crate) use build::ImageBuilder;
pub use build::{BuildSecret, BuildSecrets, IMAGE_LABEL};
pub(crate) use live::BuildLog;
pub use live::BuildLogFollower;
